//! The command line beside the desktop app: with no folder given, `hearth-node` finds the
//! app's node (one data folder for every Hearth program), reports it, and pauses and resumes it,
//! and the window shows what it did. Mistakes on the command line are named in one line.

use std::process::{Command, Output};
use std::time::Duration;

use hearth_e2e::{App, Desktop, app_binary, wait_for};

const WAIT: Duration = Duration::from_secs(10);
const STATE: &str = "[data-testid=state-label]";

/// Run `hearth-node ARGS` (built beside the app) on `desktop`, as its owner would in a terminal.
fn hearth_node(desktop: &Desktop, args: &[&str]) -> anyhow::Result<Output> {
    let program = app_binary()?.with_file_name("hearth-node");
    Ok(Command::new(program)
        .args(args)
        .envs(desktop.env())
        .env_remove("HEARTH_DATA_DIR")
        .env_remove("RUST_BACKTRACE")
        .output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_finds_and_steers_the_apps_node() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let app = App::launch(&desktop).await?;
    wait_for("the node to publish its address", WAIT, || async {
        desktop.hearth_pid()
    })
    .await?;

    let status = hearth_node(&desktop, &["status"])?;
    assert!(status.status.success(), "{}", text(&status.stderr));
    let report = text(&status.stdout);
    let node_id = report
        .lines()
        .find_map(|l| l.strip_prefix("node"))
        .map(str::trim)
        .unwrap_or_default();
    assert!(
        node_id.len() == 32 && node_id.chars().all(|c| c.is_ascii_hexdigit()),
        "a node id in {report:?}"
    );
    // The app's node, on its embedded demo pool.
    assert!(report.contains("pool      Local demo pool"), "{report}");
    assert!(report.contains("state     "), "{report}");

    let paused = hearth_node(&desktop, &["pause", "--for", "90s"])?;
    assert!(paused.status.success(), "{}", text(&paused.stderr));
    assert!(
        text(&paused.stdout).starts_with("paused from the command line until "),
        "{}",
        text(&paused.stdout)
    );
    app.wait_for_text(STATE, |t| t == "Paused").await?;
    let status = text(&hearth_node(&desktop, &["status"])?.stdout);
    assert!(
        status.contains("state     paused from the command line until "),
        "{status}"
    );

    let resumed = hearth_node(&desktop, &["resume"])?;
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    app.wait_for_text(STATE, |t| t != "Paused").await?;

    // Mistakes: one line naming the problem, exit status 2, the node untouched.
    for (args, problem) in [
        (
            &["paus"][..],
            "unknown command \"paus\" (did you mean \"pause\"?)",
        ),
        (&["pause", "--for"][..], "pause --for needs a length"),
        (&["pause", "--for", "90x"][..], "give 1s to 24h"),
        (
            &["config", "set", "pool"][..],
            "config set needs a KEY and a VALUE",
        ),
        (&[][..], "no command given"),
    ] {
        let output = hearth_node(&desktop, args)?;
        let said = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {said}");
        assert_eq!(said.trim_end().lines().count(), 1, "{args:?}: {said}");
        assert!(said.contains(problem), "{args:?}: {said}");
        assert!(text(&output.stdout).is_empty(), "{args:?}");
    }
    assert_ne!(app.text(STATE).await.as_deref(), Some("Paused"));
    app.close().await?;
    desktop.quit_hearth().await
}
