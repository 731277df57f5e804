//! `hearth-models` on the command line: a mistake is named in one line with exit status 2, a
//! failure in one line with status 1 (no backtrace unless `RUST_BACKTRACE` asks for one).

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn hearth_models(args: &[&str], models: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth-models"))
        .args(args)
        .env("HEARTH_MODELS", models)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap()
}

#[test]
fn mistakes_are_named_in_one_line_and_exit_2() {
    let empty = tempfile::tempdir().unwrap();
    for (args, problem) in [
        (
            &["embedd", "hi"][..],
            "unknown command \"embedd\" (did you mean \"embed\"?)",
        ),
        (&["embed"][..], "embed needs at least one TEXT"),
        (&["classify"][..], "classify needs at least one IMAGE"),
        (
            &["--top", "many", "classify", "a.png"][..],
            "--top \"many\"",
        ),
        (&["chat", "--seed"][..], "--seed needs a value"),
        (&[][..], "no command given"),
    ] {
        let output = hearth_models(args, empty.path());
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {said}");
        assert_eq!(said.trim_end().lines().count(), 1, "{args:?}: {said}");
        assert!(said.contains(problem), "{args:?}: {said}");
        assert!(said.starts_with("hearth-models: "), "{args:?}: {said}");
    }
    let help = hearth_models(&["help"], empty.path());
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("embed TEXT..."));
}

#[test]
fn a_failure_is_one_line_and_exits_1() {
    let empty = tempfile::tempdir().unwrap();
    let output = hearth_models(&["--backend", "cpu", "embed", "hello"], empty.path());
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{said}");
    let errors: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("hearth-models: "))
        .collect();
    assert_eq!(errors.len(), 1, "{said}");
    assert!(!said.contains("Stack backtrace"), "{said}");
}
