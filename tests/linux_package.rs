//! The Linux package, as a home user gets Hearth: the `.deb` installed with apt on this
//! machine, the installed app started on a desktop of the test's own (Xvfb) with no repository,
//! toolchain or pip behind it (its models come from the package's `/usr/share/hearth/models`),
//! a job seen done in its window, then the package removed and purged: the programs, the
//! desktop entry, the icons and the shipped models go; the owner's data folder (ledger, key,
//! settings) stays, as Debian's rules for packages ask (a package never deletes what is in
//! its users' home folders).
//!
//! It needs the package (`scripts/dev.sh test` makes one of the build it tests and names it in
//! HEARTH_LINUX_PACKAGE) and root, or sudo without a password; without them it says so and
//! checks nothing.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hearth_e2e::{App, Desktop, wait_for};

const PACKAGE: &str = "hearth";
const PROGRAMS: [&str; 4] = ["hearth-app", "hearth-tray", "hearth-node", "hearth-models"];
const SHIPPED_MODELS: [&str; 3] = [
    "all-minilm-l6-v2",
    "efficientnet-lite0",
    "smollm2-135m-instruct",
];
const ICON_SIZES: [u32; 8] = [16, 24, 32, 48, 64, 128, 256, 512];

/// `command` as root: directly when this is root, else through `sudo -n`.
fn as_root(args: &[&str]) -> Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut command = if root {
        Command::new(args[0])
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-n").arg(args[0]);
        sudo
    };
    command
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("the command runs")
}

fn can_be_root() -> bool {
    as_root(&["true"]).status.success()
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Removes the package when the test ends, however it ends.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        if installed() {
            let _ = as_root(&["dpkg", "--purge", PACKAGE]);
        }
    }
}

fn assert_ok(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_package_installs_runs_a_job_and_removes_keeping_the_ledger() -> anyhow::Result<()> {
    let Some(deb) = std::env::var_os("HEARTH_LINUX_PACKAGE") else {
        eprintln!("skipped: HEARTH_LINUX_PACKAGE names no package (scripts/dev.sh test makes one)");
        return Ok(());
    };
    if !can_be_root() {
        eprintln!("skipped: installing a package needs root or sudo without a password");
        return Ok(());
    }
    let deb = std::fs::canonicalize(deb)?;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-output/screenshots");

    // What the package says of itself: its dependencies, found by dpkg-shlibdeps and named.
    let fields = Command::new("dpkg-deb").arg("--field").arg(&deb).output()?;
    let fields = String::from_utf8_lossy(&fields.stdout).into_owned();
    for needed in [
        "Package: hearth",
        "libwebkit2gtk-4.1-0",
        "libayatana-appindicator3-1",
        "libgtk-3-0",
    ] {
        assert!(
            fields.contains(needed),
            "the package names {needed}: {fields}"
        );
    }
    assert!(
        fields.contains("Recommends: mesa-vulkan-drivers"),
        "{fields}"
    );

    // Installed the way a user does, by apt, which checks the dependencies are met.
    if installed() {
        assert_ok(
            "an earlier run's package purged",
            &as_root(&["dpkg", "--purge", PACKAGE]),
        );
    }
    let _uninstall = Uninstall;
    let deb_arg = deb.display().to_string();
    assert_ok(
        "apt-get install",
        &as_root(&[
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            &deb_arg,
        ]),
    );
    assert!(installed());
    for program in PROGRAMS {
        let path = Path::new("/usr/bin").join(program);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path)?.permissions());
        assert_eq!(mode & 0o111, 0o111, "{} can be run", path.display());
    }
    let entry = std::fs::read_to_string("/usr/share/applications/hearth.desktop")?;
    assert!(entry.contains("Exec=/usr/bin/hearth-app"), "{entry}");
    assert!(entry.contains("Icon=hearth"), "{entry}");
    for size in ICON_SIZES {
        let icon = format!("/usr/share/icons/hicolor/{size}x{size}/apps/hearth.png");
        let png = std::fs::read(&icon)?;
        // A PNG's IHDR holds its width and height at bytes 16..24.
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{icon}");
        assert_eq!(
            (
                u32::from_be_bytes(png[16..20].try_into()?),
                u32::from_be_bytes(png[20..24].try_into()?)
            ),
            (size, size),
            "{icon}"
        );
    }
    assert!(Path::new("/usr/share/icons/hicolor/scalable/apps/hearth.svg").is_file());
    for model in SHIPPED_MODELS {
        hearth_inference::ModelStore::new("/usr/share/hearth/models").verify(model)?;
    }

    // The installed app, started by a user who has never run Hearth, on no repository: the
    // first start uses the shipped models and does real work with the embedded pool. Start at
    // login is on, so the autostart entry names the installed app.
    let desktop = Desktop::start().await?;
    std::fs::write(
        desktop.app_data_dir().join("config.toml"),
        "first_run_done = true\nstart_at_login = true\n",
    )?;
    let app = App::launch_program(
        &desktop,
        Path::new("/usr/bin/hearth-app"),
        "[data-testid=state-label]",
    )
    .await?;
    let jobs = wait_for(
        "a job done by the installed app",
        Duration::from_secs(180),
        || async {
            let jobs: f64 = app
                .text("[data-testid=jobs-today]")
                .await?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            (jobs >= 1.0).then_some(jobs)
        },
    )
    .await?;
    desktop.screenshot(&shots.join("package-installed-app.png"))?;
    eprintln!("the installed app did {jobs} jobs");
    let tray_program = std::fs::read_link(format!(
        "/proc/{}/exe",
        desktop
            .hearth_pid()
            .expect("the installed tray process runs")
    ))?;
    assert_eq!(
        tray_program,
        Path::new("/usr/bin/hearth-tray"),
        "the work is done by the installed programs"
    );
    let autostart = std::fs::read_to_string(desktop.autostart_dir().join("Hearth.desktop"))?;
    assert!(
        autostart.contains("/usr/bin/hearth-app --in-tray"),
        "{autostart}"
    );
    let logs = desktop.app_logs()?;
    assert!(
        logs.contains("shipped_models=/usr/share/hearth/models"),
        "the node reads the package's models: {logs}"
    );
    let own_models = desktop.app_data_dir().join("models");
    assert!(
        !own_models.join("all-minilm-l6-v2/weights").exists(),
        "the shipped models are used where they are, not copied"
    );
    app.close().await?;
    desktop.quit_hearth().await?;
    let ledger = desktop.app_data_dir().join("ledger");
    assert!(ledger.is_dir(), "the app keeps a ledger");

    // Removed: the programs and what came with them go; the owner's data stays.
    assert_ok(
        "apt-get remove",
        &as_root(&[
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=600",
            "remove",
            "-y",
            "-q",
            PACKAGE,
        ]),
    );
    for program in PROGRAMS {
        assert!(
            !Path::new("/usr/bin").join(program).exists(),
            "{program} removed"
        );
    }
    assert!(!Path::new("/usr/share/applications/hearth.desktop").exists());
    assert!(
        !Path::new("/usr/share/hearth").exists(),
        "the shipped models removed"
    );
    assert!(!Path::new("/usr/share/icons/hicolor/512x512/apps/hearth.png").exists());
    assert!(ledger.is_dir(), "the owner's ledger stays after removal");
    assert!(
        desktop.app_data_dir().join("node.key").is_file(),
        "and the node's key"
    );

    // Purged: the package leaves no trace in dpkg's records; the owner's ledger still stays
    // (Debian policy: home folders are the user's; the README says how to delete it).
    assert_ok("dpkg --purge", &as_root(&["dpkg", "--purge", PACKAGE]));
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()?;
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "purged"
    );
    assert!(ledger.is_dir(), "the owner's ledger stays after a purge");
    Ok(())
}
