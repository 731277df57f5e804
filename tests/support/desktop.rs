//! A private desktop session: X server, session bus and tray host.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::Owned;

/// An X server, a session bus with a tray host on it, and empty XDG directories.
#[derive(Debug)]
pub struct Desktop {
    display: String,
    bus_address: String,
    home: tempfile::TempDir,
    /// Variables a test added for the programs it starts from now on.
    extra_env: std::sync::Mutex<Vec<(String, String)>>,
    // Dropped in reverse order of start: tray host, bus, X server.
    _tray_host: Owned,
    _bus: Owned,
    _xvfb: Owned,
}

impl Desktop {
    /// Start everything, with the app's first-run guide already done (most tests are about
    /// something else), and wait until the tray host owns its bus name.
    pub async fn start() -> anyhow::Result<Self> {
        let desktop = Self::start_first_run().await?;
        std::fs::create_dir_all(desktop.app_data_dir())?;
        std::fs::write(
            desktop.app_data_dir().join("config.toml"),
            "first_run_done = true\n",
        )?;
        Ok(desktop)
    }

    /// As [`Desktop::start`], for an app that has never run here: it shows its first-run guide.
    pub async fn start_first_run() -> anyhow::Result<Self> {
        let home = tempfile::Builder::new().prefix("hearth-e2e-").tempdir()?;
        for dir in ["data", "config", "cache", "runtime", "downloads"] {
            std::fs::create_dir_all(home.path().join(dir))?;
        }
        set_private(&home.path().join("runtime"))?;
        let (xvfb, display) = start_xvfb()?;
        let (bus, bus_address) = start_session_bus()?;
        let tray_host = Owned::spawn(
            "status-notifier-watcher",
            Command::new("status-notifier-watcher")
                .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let desktop = Self {
            display,
            bus_address,
            home,
            extra_env: std::sync::Mutex::new(Vec::new()),
            _tray_host: tray_host,
            _bus: bus,
            _xvfb: xvfb,
        };
        crate::wait_for("the tray host", Duration::from_secs(10), || async {
            desktop
                .gdbus(&[
                    "call",
                    "--dest",
                    "org.freedesktop.DBus",
                    "--object-path",
                    "/org/freedesktop/DBus",
                    "--method",
                    "org.freedesktop.DBus.NameHasOwner",
                    "org.kde.StatusNotifierWatcher",
                ])
                .ok()
                .filter(|out| out.contains("true"))
        })
        .await?;
        Ok(desktop)
    }

    /// The environment a program needs to run on this desktop.
    pub fn env(&self) -> Vec<(String, String)> {
        let dir = |name: &str| self.home.path().join(name).display().to_string();
        let extra = self
            .extra_env
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut env = vec![
            ("DISPLAY".into(), self.display.clone()),
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.bus_address.clone()),
            ("XDG_DATA_HOME".into(), dir("data")),
            ("XDG_CONFIG_HOME".into(), dir("config")),
            ("XDG_CACHE_HOME".into(), dir("cache")),
            ("XDG_RUNTIME_DIR".into(), dir("runtime")),
            ("GDK_BACKEND".into(), "x11".into()),
            ("HEARTH_EXPORT_DIR".into(), dir("downloads")),
            // Some libraries ignore XDG_*_HOME (the autostart plugin writes to
            // ~/.config/autostart): keep them inside this desktop too.
            ("HOME".into(), self.home.path().display().to_string()),
        ];
        env.extend(extra);
        env
    }

    /// Set `key` to `value` for every program started on this desktop from now on.
    pub fn set_env(&self, key: &str, value: &str) {
        self.extra_env
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((key.into(), value.into()));
    }

    /// Start the app binary on this desktop directly (no WebDriver), with `args`, its output
    /// discarded (it logs to its data folder).
    pub fn spawn_app(&self, args: &[&str]) -> anyhow::Result<std::process::Child> {
        Ok(std::process::Command::new(crate::app_binary()?)
            .args(args)
            .envs(self.env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?)
    }

    /// The X display, e.g. ":91".
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Where the app keeps its data on this desktop.
    pub fn app_data_dir(&self) -> PathBuf {
        self.home.path().join("data").join("app.hearth.desktop")
    }

    /// Where the desktop's session looks for programs to start at login
    /// (`~/.config/autostart`).
    pub fn autostart_dir(&self) -> PathBuf {
        self.home.path().join(".config").join("autostart")
    }

    /// Where the app saves exports (the History page's CSV) on this desktop.
    pub fn downloads_dir(&self) -> PathBuf {
        self.home.path().join("downloads")
    }

    /// Run `gdbus <args>` on this desktop's session bus and return its output.
    pub fn gdbus(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("gdbus");
        command.arg(args[0]).arg("--session").args(&args[1..]);
        self.output_of(&mut command)
    }

    /// Run a command on this desktop and return its standard output; fail on a non-zero exit.
    pub fn output_of(&self, command: &mut Command) -> anyhow::Result<String> {
        let output = command.envs(self.env()).output()?;
        if !output.status.success() {
            anyhow::bail!(
                "{:?} failed: {}",
                command,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Draw the tray as a desktop panel does: a bar along the top of the screen with every
    /// tray icon in it, starting at the left (`gtk-sni-tray-standalone`, a real
    /// StatusNotifierItem host); clicking an icon opens its menu. Stops when dropped.
    pub fn show_tray_bar(&self) -> anyhow::Result<Owned> {
        Owned::spawn(
            "gtk-sni-tray-standalone",
            Command::new("gtk-sni-tray-standalone")
                .args(["--top", "--beginning", "--size", "32", "--no-strut"])
                .envs(self.env())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    /// Click mouse `button` at (`x`, `y`) on the screen, as the owner would (xdotool).
    pub fn click_at(&self, x: u32, y: u32, button: u8) -> anyhow::Result<()> {
        self.output_of(Command::new("xdotool").args([
            "mousemove",
            &x.to_string(),
            &y.to_string(),
            "click",
            &button.to_string(),
        ]))?;
        Ok(())
    }

    /// Press a key (an X keysym name such as `Escape`) on this desktop (xdotool).
    pub fn press_key(&self, key: &str) -> anyhow::Result<()> {
        self.output_of(Command::new("xdotool").args(["key", key]))?;
        Ok(())
    }

    /// Save a screenshot of the whole screen as PNG (needs ImageMagick's `import`).
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        self.output_of(Command::new("import").args(["-window", "root"]).arg(path))?;
        Ok(())
    }

    /// The process id of Hearth's background process (`hearth-tray`) on this desktop, while
    /// it runs.
    pub fn hearth_pid(&self) -> Option<u32> {
        hearth_instance::running_node(&self.app_data_dir()).map(|node| node.pid)
    }

    /// The names (`comm`) of the processes running on this desktop, other than the desktop's
    /// own: the app's and WebKit's.
    pub fn programs_running(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .processes()
            .into_iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The live processes started on this desktop (their environment names its home, which no
    /// other desktop shares), other than the desktop's own.
    fn processes(&self) -> Vec<u32> {
        let marker = format!("HOME={}", self.home.path().display());
        let own = [
            "Xvfb",
            "dbus-daemon",
            "status-notifier",
            "tauri-driver",
            "WebKitWebDriver",
        ];
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|&pid| pid != std::process::id() && hearth_instance::process_alive(pid))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == marker.as_bytes()))
            })
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|name| !own.iter().any(|o| name.starts_with(o)))
            })
            .collect()
    }

    /// Quit Hearth from its tray menu, as its owner would, and wait until the background
    /// process has exited (the window, if open, closes with it).
    pub async fn quit_hearth(&self) -> anyhow::Result<()> {
        let pid = self
            .hearth_pid()
            .ok_or_else(|| anyhow::anyhow!("Hearth is not running"))?;
        let tray = crate::wait_for("the tray menu", Duration::from_secs(10), || async {
            crate::TrayMenu::find(self).ok().flatten()
        })
        .await?;
        tray.click(self, "Quit")?;
        crate::wait_for("Hearth to quit", Duration::from_secs(20), || async {
            (!hearth_instance::process_alive(pid)).then_some(())
        })
        .await
    }

    /// Everything the app has written to its log files so far.
    pub fn app_logs(&self) -> anyhow::Result<String> {
        let mut logs = String::new();
        for entry in std::fs::read_dir(self.app_data_dir().join("logs"))? {
            logs.push_str(&std::fs::read_to_string(entry?.path())?);
        }
        Ok(logs)
    }
}

impl Drop for Desktop {
    /// Hearth's background process outlives its window by design: end it, and anything else
    /// started here, with the desktop.
    fn drop(&mut self) {
        for pid in self.processes() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Start Xvfb on a display it picks itself (`-displayfd`), so parallel tests never collide.
fn start_xvfb() -> anyhow::Result<(Owned, String)> {
    let mut xvfb = Owned::spawn(
        "Xvfb",
        Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )?;
    let number = first_line_of_stdout(&mut xvfb)?;
    anyhow::ensure!(
        number.parse::<u32>().is_ok(),
        "Xvfb printed {number:?} instead of a display number"
    );
    Ok((xvfb, format!(":{number}")))
}

fn start_session_bus() -> anyhow::Result<(Owned, String)> {
    let mut bus = Owned::spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )?;
    let address = first_line_of_stdout(&mut bus)?;
    anyhow::ensure!(!address.is_empty(), "dbus-daemon printed no address");
    Ok((bus, address))
}

/// The first line a child prints, trimmed; blocks until it prints one or exits.
fn first_line_of_stdout(child: &mut Owned) -> anyhow::Result<String> {
    let stdout = child
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("child has no piped stdout"))?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Keep the pipe open: a child writing to a closed pipe would die of SIGPIPE.
    child.child_mut().stdout = Some(reader.into_inner());
    Ok(line.trim().to_owned())
}

#[cfg(unix)]
fn set_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}
