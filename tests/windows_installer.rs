//! The Windows installer, `hearth-setup.exe` (NSIS), under Wine in a Wine prefix of the test's
//! own: installed silently, the installed node started (on the owner's data folder, with the
//! embedded pool: real work), then uninstalled. The programs, the Start menu entry and the
//! login item are gone; the owner's ledger stays. Installed again and uninstalled with
//! /REMOVEDATA, the ledger goes too.
//!
//! It needs the installer and Wine, which `scripts/dev.sh test` provides (it builds the
//! installer and names it in HEARTH_WINDOWS_SETUP); without them it says so and checks nothing.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hearth_e2e::wait_for;

const RUN_KEY: &str = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";

/// `wine` with `args` in `prefix`, to the end.
fn wine(prefix: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let output = Command::new("wine")
        .args(args)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
        .output()
        .expect("wine runs");
    // An uninstaller hands over to a copy of itself and returns: wait for every program in
    // the prefix to end.
    Command::new("wineserver")
        .arg("-w")
        .env("WINEPREFIX", prefix)
        .status()
        .expect("wineserver runs");
    output
}

/// A value under a registry key, as `reg query` shows it.
fn registry_value(prefix: &Path, key: &str, name: &str) -> Option<String> {
    let output = wine(
        prefix,
        &[
            "reg".as_ref(),
            "query".as_ref(),
            key.as_ref(),
            "/v".as_ref(),
            name.as_ref(),
        ],
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let rest = line.trim_start().strip_prefix(name)?;
            Some(rest.trim_start().strip_prefix("REG_SZ")?.trim().to_owned())
        })
}

struct Installed {
    programs: PathBuf,
    start_menu: PathBuf,
    data: PathBuf,
}

impl Installed {
    fn in_prefix(prefix: &Path) -> Self {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let home = prefix.join("drive_c/users").join(user);
        Self {
            programs: home.join("AppData/Local/Programs/Hearth"),
            start_menu: home.join("AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Hearth"),
            data: home.join("AppData/Roaming/app.hearth.desktop"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn installs_runs_and_uninstalls_keeping_the_ledger_unless_asked() -> anyhow::Result<()> {
    let Some(setup) = std::env::var_os("HEARTH_WINDOWS_SETUP") else {
        eprintln!(
            "skipped: HEARTH_WINDOWS_SETUP names no installer (scripts/dev.sh test builds one)"
        );
        return Ok(());
    };
    let prefix = tempfile::tempdir()?;
    let installed = Installed::in_prefix(prefix.path());

    let install = wine(prefix.path(), &[setup.as_ref(), "/S".as_ref()]);
    assert!(install.status.success(), "{install:?}");
    for program in ["hearth-app", "hearth-tray", "hearth-node", "hearth-models"] {
        assert!(
            installed.programs.join(format!("{program}.exe")).is_file(),
            "{program}.exe installed"
        );
    }
    assert!(installed.programs.join("uninstall.exe").is_file());
    assert!(installed.start_menu.join("Hearth.lnk").is_file());
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    assert_eq!(
        registry_value(prefix.path(), RUN_KEY, "Hearth").as_deref(),
        Some(
            format!(r#""C:\users\{user}\AppData\Local\Programs\Hearth\hearth-app.exe" --in-tray"#)
                .as_str()
        ),
        "start at login, as Settings writes it"
    );

    // The installed node, on the owner's data folder, does real work with the embedded pool.
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/windows/wine-run");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut node = Command::new(&runner)
        .arg(installed.programs.join("hearth-node.exe"))
        .args(["run", "--port", "0", "--backend", "cpu"])
        .env("WINEPREFIX", prefix.path())
        .env("HEARTH_MODELS", &models)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let banner = std::io::BufRead::lines(std::io::BufReader::new(node.stdout.take().unwrap()));
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in banner.map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut api = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Ok(line) = received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.strip_prefix("web UI: ") {
            api = rest
                .split_once("/?token=")
                .map(|(u, t)| (u.to_owned(), t.to_owned()));
        }
        if line == "ready" {
            break;
        }
    }
    let (url, token) = api.expect("the installed node started under Wine");
    let http = reqwest::Client::new();
    let jobs = wait_for(
        "a job done by the installed node",
        Duration::from_secs(120),
        || async {
            let overview: serde_json::Value = http
                .get(format!("{url}/api/overview"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            overview["earnings"]["today_jobs"]
                .as_u64()
                .filter(|jobs| *jobs >= 1)
        },
    )
    .await?;
    eprintln!("the installed node did {jobs} jobs");
    node.kill()?;
    node.wait()?;
    // wine-run put Wine's stand-in DLL beside the program; it is not the installer's to remove.
    std::fs::remove_file(installed.programs.join("bcryptprimitives.dll"))?;
    assert!(
        installed.data.join("ledger").is_dir(),
        "the node kept its ledger"
    );

    let uninstall = wine(
        prefix.path(),
        &[
            installed.programs.join("uninstall.exe").as_os_str(),
            "/S".as_ref(),
        ],
    );
    assert!(uninstall.status.success(), "{uninstall:?}");
    assert!(!installed.programs.exists(), "the programs are gone");
    assert!(
        !installed.start_menu.exists(),
        "the Start menu entry is gone"
    );
    assert_eq!(registry_value(prefix.path(), RUN_KEY, "Hearth"), None);
    assert!(
        installed.data.join("ledger").is_dir(),
        "the owner's ledger stays"
    );

    // Installed again, then uninstalled with /REMOVEDATA: the data folder goes too.
    assert!(
        wine(prefix.path(), &[setup.as_ref(), "/S".as_ref()])
            .status
            .success()
    );
    let uninstall = wine(
        prefix.path(),
        &[
            installed.programs.join("uninstall.exe").as_os_str(),
            "/S".as_ref(),
            "/REMOVEDATA".as_ref(),
        ],
    );
    assert!(uninstall.status.success(), "{uninstall:?}");
    assert!(!installed.programs.exists());
    assert!(
        !installed.data.exists(),
        "asked to, it removed the data folder"
    );
    Ok(())
}
