//! The operator's command line: a mistake is named in one line with exit status 2, a failure
//! in one line with status 1; the pool's data folder is decided by `hearth_instance`.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn hearth_pool(args: &[&str], home: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth-pool"))
        .args(args)
        .env("XDG_DATA_HOME", home)
        .env_remove("HEARTH_POOL_DATA_DIR")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn said(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn mistakes_are_named_in_one_line_and_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for (args, problem) in [
        (
            &["serv"][..],
            "unknown command \"serv\" (did you mean \"serve\"?)",
        ),
        (&["keys", "add"][..], "keys add needs --name NAME"),
        (
            &["keys", "add", "--name", "a", "--rpm", "lots"][..],
            "--rpm takes a whole number, not \"lots\"",
        ),
        (&["keys"][..], "keys needs add, list or revoke"),
        (&["serve", "--config"][..], "--config needs a value"),
        (
            &["payouts", "now"][..],
            "payouts: unexpected arguments [\"now\"]",
        ),
    ] {
        let output = hearth_pool(args, home.path());
        let text = said(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{args:?}: {text}");
        assert!(text.contains(problem), "{args:?}: {text}");
    }
    // None of them opened a database.
    assert!(std::fs::read_dir(home.path()).unwrap().next().is_none());
}

#[test]
fn a_failure_is_one_line_and_exits_1() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("pool.toml");
    std::fs::write(&config, "bind = \"127.0.0.1:0\"\n").unwrap();
    let output = hearth_pool(
        &["migrate", "--config", config.to_str().unwrap()],
        home.path(),
    );
    let text = said(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    assert!(text.contains("migrate is for PostgreSQL"), "{text}");
}

#[test]
fn the_default_data_folder_is_hearth_pool_in_the_platforms_data_folder() {
    let home = tempfile::tempdir().unwrap();
    let output = hearth_pool(&["keys", "list"], home.path());
    assert!(output.status.success(), "{}", said(&output));
    assert!(home.path().join("hearth-pool").is_dir());
    // $HEARTH_POOL_DATA_DIR overrides it.
    let elsewhere = home.path().join("elsewhere");
    let output = Command::new(env!("CARGO_BIN_EXE_hearth-pool"))
        .args(["keys", "list"])
        .env("XDG_DATA_HOME", home.path())
        .env("HEARTH_POOL_DATA_DIR", &elsewhere)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", said(&output));
    assert!(elsewhere.is_dir());
}
