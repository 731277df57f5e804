//! `hearth-tray.exe` under Wine, on a private X server: Wine's desktop with its taskbar
//! (`explorer /desktop=shell`) shows the icon in its notification area as Windows does. The
//! test finds the icon there by its colours, right-clicks it, and chooses Pause in the menu
//! that opens: the node pauses "from the tray" and the icon turns grey; Resume in the same menu
//! brings the flame back. The tray follows the node on Windows' message loop. Screenshots go
//! to test-output/screenshots/windows-tray-*.png.
//!
//! It needs the Windows programs and Wine, which `scripts/dev.sh test` provides (it names
//! hearth-node.exe, beside hearth-tray.exe, in HEARTH_WINDOWS_NODE); without them it says so
//! and checks nothing.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hearth_e2e::{Desktop, wait_for};

/// Wine's desktop: its size, and the taskbar along its bottom edge.
const WINE_DESKTOP: (u32, u32) = (1024, 700);
const TASKBAR_HEIGHT: u32 = 20;

/// A screenshot's pixels (`import -window root ppm:-`).
struct Screen {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Screen {
    fn capture(desktop: &Desktop) -> Self {
        let output = Command::new("import")
            .args(["-window", "root", "-depth", "8", "ppm:-"])
            .env("DISPLAY", desktop.display())
            .output()
            .expect("ImageMagick's import runs");
        assert!(output.status.success(), "{output:?}");
        // "P6\n<width> <height>\n255\n" then the pixels.
        let bytes = output.stdout;
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while !bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
        }
        assert_eq!(fields[0], "P6");
        let (width, height) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
        let rgb = bytes[at + 1..].to_vec();
        assert_eq!(rgb.len(), (width * height * 3) as usize);
        Self { width, height, rgb }
    }

    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The pixels in `area` (x, y, width, height) that `keep` picks.
    fn find(
        &self,
        area: (u32, u32, u32, u32),
        keep: impl Fn(u32, u32, [u8; 3]) -> bool,
    ) -> Vec<(u32, u32)> {
        let (x0, y0, w, h) = area;
        let mut found = Vec::new();
        for y in y0..(y0 + h).min(self.height) {
            for x in x0..(x0 + w).min(self.width) {
                if keep(x, y, self.pixel(x, y)) {
                    found.push((x, y));
                }
            }
        }
        found
    }
}

/// Strongly coloured: the flame of the running icon (orange), not the taskbar's greys.
fn colourful([r, g, b]: [u8; 3]) -> bool {
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    max - min > 90
}

/// The box (x0, y0, x1, y1) around `points`.
fn bounds(points: &[(u32, u32)]) -> (u32, u32, u32, u32) {
    let xs = points.iter().map(|p| p.0);
    let ys = points.iter().map(|p| p.1);
    (
        xs.clone().min().unwrap(),
        ys.clone().min().unwrap(),
        xs.max().unwrap(),
        ys.max().unwrap(),
    )
}

/// The Windows path of a Linux path (`Z:\...`: Wine's Z: drive is the Linux root).
fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_windows_tray_menu_pauses_and_resumes_the_node() -> anyhow::Result<()> {
    let Some(node) = std::env::var_os("HEARTH_WINDOWS_NODE") else {
        eprintln!(
            "skipped: HEARTH_WINDOWS_NODE names no Windows build (scripts/dev.sh test makes one)"
        );
        return Ok(());
    };
    let programs = Path::new(&node).parent().unwrap().to_path_buf();
    let tray = programs.join("hearth-tray.exe");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = root.join("test-output/screenshots");
    std::fs::create_dir_all(&shots)?;
    // wine-run puts the DLL Rust's standard library needs under Wine beside the programs.
    let prepared = Command::new(root.join("scripts/windows/wine-run"))
        .args(["--prepare".as_ref(), tray.as_os_str()])
        .status()?;
    assert!(prepared.success());

    let desktop = Desktop::start().await?;
    let prefix = WinePrefix(tempfile::tempdir()?);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let data = prefix
        .0
        .path()
        .join("drive_c/users")
        .join(&user)
        .join("AppData/Roaming/app.hearth.desktop");
    let wine = |args: &[&str]| {
        let mut command = Command::new("wine");
        command
            .args(args)
            .env("DISPLAY", desktop.display())
            .env("WINEPREFIX", prefix.0.path())
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env("HEARTH_MODELS", root.join("models"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    // Wine's desktop with a taskbar, running the tray program.
    let (w, h) = WINE_DESKTOP;
    let shell = wine(&[
        "explorer",
        &format!("/desktop=shell,{w}x{h}"),
        &windows_path(&tray),
    ])
    .spawn()?;
    let _shell = Reaped(shell);

    let running = wait_for(
        "hearth-tray.exe's API",
        Duration::from_secs(180),
        || async {
            let server: serde_json::Value =
                serde_json::from_slice(&std::fs::read(data.join("server.json")).ok()?).ok()?;
            let token = std::fs::read_to_string(data.join("api-token")).ok()?;
            Some((server["url"].as_str()?.to_owned(), token.trim().to_owned()))
        },
    )
    .await?;
    let http = reqwest::Client::new();
    let status = || async {
        http.get(format!("{}/api/status", running.0))
            .bearer_auth(&running.1)
            .send()
            .await
            .ok()?
            .json::<serde_json::Value>()
            .await
            .ok()
    };
    wait_for("the node running", Duration::from_secs(60), || async {
        status()
            .await
            .filter(|s| s["activity"]["kind"] == "running")
    })
    .await?;
    // The default settings ("auto"): wgpu offers Wine's DX12 device, a made-up adapter
    // whose shader compiler is not implemented. Its check (hearth-models.exe gpu-check, in a
    // process of its own) fails, and the node works on the processor and says why, instead of
    // taking the tray down at the first model it loads on that device.
    let overview: serde_json::Value = http
        .get(format!("{}/api/overview", running.0))
        .bearer_auth(&running.1)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(overview["device"], "your processor", "{overview:#}");
    let notices = overview["pool"]["notices"].to_string();
    assert!(
        notices.contains("failed Hearth's check") && notices.contains("works on the processor"),
        "{notices}"
    );
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("gpu-check.json"))?)?;
    assert_eq!(verdict["passed"], false, "{verdict:#}");
    eprintln!("the GPU check under Wine: {verdict}");

    // The icon: the flame's colours in the taskbar's notification area, right of Start.
    let taskbar = (80, h - TASKBAR_HEIGHT, w - 80, TASKBAR_HEIGHT);
    let flame = wait_for(
        "the icon in Wine's taskbar",
        Duration::from_secs(30),
        || async {
            let screen = Screen::capture(&desktop);
            let found = screen.find(taskbar, |_, _, rgb| colourful(rgb));
            (found.len() >= 20).then_some(found)
        },
    )
    .await?;
    let (x0, y0, x1, y1) = bounds(&flame);
    assert!(
        x1 - x0 <= 24 && y1 - y0 <= 24,
        "one small icon: {:?}",
        (x0, y0, x1, y1)
    );
    desktop.screenshot(&shots.join("windows-tray-icon.png"))?;

    // The menu, as the owner uses it: a right-click on the icon opens it at the cursor, and its
    // first black (enabled) item under the two grey status lines is Pause; the node pauses
    // "from the tray", and the icon turns grey. The same item then reads Resume.
    let in_icon = (
        x0.saturating_sub(4),
        y0.saturating_sub(4),
        x1 - x0 + 8,
        y1 - y0 + 8,
    );
    let icon_centre = ((x0 + x1) / 2, (y0 + y1) / 2);
    let flame_shown = |shown: bool| {
        let desktop = &desktop;
        async move {
            let screen = Screen::capture(desktop);
            let colourful_pixels = screen.find(in_icon, |_, _, rgb| colourful(rgb)).len();
            (if shown {
                colourful_pixels >= 20
            } else {
                colourful_pixels == 0
            })
            .then_some(())
        }
    };
    choose_toggle_from_menu(&desktop, icon_centre, &shots.join("windows-tray-menu.png")).await?;
    let paused = wait_for(
        "the node paused from the tray",
        Duration::from_secs(20),
        || async { status().await.filter(|s| s["activity"]["kind"] == "paused") },
    )
    .await?;
    assert_eq!(
        paused["activity"]["reason"],
        serde_json::json!({"kind": "user", "source": "tray", "until_ms": null}),
        "paused by the tray's Pause"
    );
    wait_for("the grey icon", Duration::from_secs(10), || {
        flame_shown(false)
    })
    .await?;
    desktop.screenshot(&shots.join("windows-tray-paused.png"))?;

    choose_toggle_from_menu(
        &desktop,
        icon_centre,
        &shots.join("windows-tray-menu-paused.png"),
    )
    .await?;
    wait_for(
        "the node running again, resumed from the tray",
        Duration::from_secs(20),
        || async {
            status()
                .await
                .filter(|s| s["activity"]["kind"] == "running")
        },
    )
    .await?;
    wait_for("the flame again", Duration::from_secs(10), || {
        flame_shown(true)
    })
    .await?;
    Ok(())
}

/// Right-click the tray icon at `icon`, wait for its menu (what changed on the screen above
/// the taskbar), save a screenshot of it to `shot`, and click its first item written in black:
/// the Pause/Resume toggle, under the status and earnings lines, which are disabled (grey).
async fn choose_toggle_from_menu(
    desktop: &Desktop,
    icon: (u32, u32),
    shot: &Path,
) -> anyhow::Result<()> {
    let (w, h) = WINE_DESKTOP;
    let above_taskbar = (0, 0, w, h - TASKBAR_HEIGHT);
    let before = Screen::capture(desktop);
    desktop.click_at(icon.0, icon.1, 3)?;
    let menu = wait_for("the tray menu", Duration::from_secs(10), || async {
        let now = Screen::capture(desktop);
        let changed = now.find(above_taskbar, |x, y, rgb| before.pixel(x, y) != rgb);
        if changed.len() < 2000 {
            return None;
        }
        let (mx0, my0, mx1, my1) = bounds(&changed);
        // Black text well inside the menu's frame: the enabled items.
        let inside = (
            mx0 + 4,
            my0 + 4,
            (mx1 - mx0).saturating_sub(8),
            (my1 - my0).saturating_sub(8),
        );
        let black = now.find(inside, |_, _, [r, g, b]| r.max(g).max(b) < 40);
        (!black.is_empty()).then_some(((mx0, my0, mx1, my1), black))
    })
    .await?;
    desktop.screenshot(shot)?;
    let ((mx0, my0, mx1, my1), black) = menu;
    // The first enabled item: the run of rows, from the topmost black pixel, that hold black.
    let top = black.iter().map(|p| p.1).min().unwrap();
    let rows: std::collections::BTreeSet<u32> = black.iter().map(|p| p.1).collect();
    let mut bottom = top;
    while rows.contains(&(bottom + 1)) {
        bottom += 1;
    }
    assert!(
        bottom - top <= 16 && my1 - my0 >= 5 * (bottom - top),
        "one line of text in a menu of several: text rows {top}..={bottom}, menu {:?}",
        (mx0, my0, mx1, my1)
    );
    desktop.click_at(mx0 + 30, (top + bottom) / 2, 1)?;
    // The menu closes once the item is chosen.
    wait_for("the menu closed", Duration::from_secs(10), || async {
        let now = Screen::capture(desktop);
        (now.pixel(mx0 + 4, (my0 + my1) / 2) == before.pixel(mx0 + 4, (my0 + my1) / 2))
            .then_some(())
    })
    .await?;
    Ok(())
}

/// A Wine prefix of the test's own; every program in it ends when it is dropped (a failed
/// test's too: to the Linux nodes tested next, a running .exe is a game).
struct WinePrefix(tempfile::TempDir);

impl Drop for WinePrefix {
    fn drop(&mut self) {
        let _ = Command::new("wineserver")
            .arg("-k")
            .env("WINEPREFIX", self.0.path())
            .status();
    }
}

/// A child process waited for when dropped (after the prefix's programs were ended).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
