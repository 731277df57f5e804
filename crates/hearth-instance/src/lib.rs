//! How Hearth's processes find each other. The background process (`hearth-tray`: the node,
//! its local API and the tray icon) publishes where its API listens in [`SERVER_FILE`] and
//! keeps the API's token in [`TOKEN_FILE`], both in the data folder; the window process
//! (`hearth-app`) and the CLI read them. Small on purpose: the window links this, not the node.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod logging;

/// The file holding the local API's token, in the data folder (mode 0600).
pub const TOKEN_FILE: &str = "api-token";
/// The file a running node writes with its API's address and its process id.
pub const SERVER_FILE: &str = "server.json";
/// The desktop app's identifier: its data folder's name.
pub const APP_IDENTIFIER: &str = "app.hearth.desktop";
/// The background process's program name.
pub const TRAY_PROGRAM: &str = "hearth-tray";
/// The window's program name.
pub const WINDOW_PROGRAM: &str = "hearth-app";
/// The model tool (`hearth-models`), beside the others; the node runs its GPU check.
pub const MODELS_PROGRAM: &str = "hearth-models";
/// Start without opening the window (how Hearth starts at login).
pub const IN_TRAY_FLAG: &str = "--in-tray";

/// Where a running node listens (the contents of [`SERVER_FILE`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub url: String,
    pub pid: u32,
}

/// A running node found through its files: where its API is and the token to call it with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunningNode {
    pub url: String,
    pub pid: u32,
    pub token: String,
}

/// The folder the headless node used before Hearth's programs shared one.
const LEGACY_NODE_FOLDER: &str = "hearth";

/// Whose data folder. [`DataFolder::path`] is the one place either is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFolder {
    /// Hearth on this computer: the window, its background process, the headless node
    /// (`hearth-node run`) and the CLI share it, so each finds whichever of the others runs.
    Hearth,
    /// An operator's `hearth-pool` (its sled database and admin file).
    Pool,
}

/// The system names no data folder and the variable that would is not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this system names no data folder (set {variable})")]
pub struct NoDataFolder {
    /// The environment variable to set.
    pub variable: &'static str,
}

impl DataFolder {
    /// `$HEARTH_DATA_DIR` (Hearth) or `$HEARTH_POOL_DATA_DIR` (a pool) when set, else a folder
    /// in the platform's data folder: `app.hearth.desktop` or `hearth-pool` (in
    /// `~/.local/share` on Linux, `%APPDATA%` on Windows). A headless node set up before the
    /// programs shared a folder keeps its old one (`hearth`) until the shared one exists.
    pub fn path(self) -> Result<PathBuf, NoDataFolder> {
        self.resolve(|name| std::env::var_os(name), dirs::data_dir())
    }

    /// [`DataFolder::path`] with the environment and the platform's data folder given.
    fn resolve(
        self,
        variable: impl Fn(&str) -> Option<std::ffi::OsString>,
        platform: Option<PathBuf>,
    ) -> Result<PathBuf, NoDataFolder> {
        let (name, folder) = match self {
            Self::Hearth => ("HEARTH_DATA_DIR", APP_IDENTIFIER),
            Self::Pool => ("HEARTH_POOL_DATA_DIR", "hearth-pool"),
        };
        if let Some(dir) = variable(name).filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        let platform = platform.ok_or(NoDataFolder { variable: name })?;
        let shared = platform.join(folder);
        let legacy = platform.join(LEGACY_NODE_FOLDER);
        if self == Self::Hearth && !shared.exists() && legacy.is_dir() {
            return Ok(legacy);
        }
        Ok(shared)
    }
}

/// Where exports go: `$HEARTH_EXPORT_DIR`, else the Downloads folder, else `fallback`.
pub fn export_dir(fallback: &Path) -> PathBuf {
    std::env::var_os("HEARTH_EXPORT_DIR")
        .map(PathBuf::from)
        .or_else(dirs::download_dir)
        .unwrap_or_else(|| fallback.to_owned())
}

/// Record that this process serves the API at `url` (atomically: a reader never sees half a
/// file).
pub fn publish(data_dir: &Path, url: &str) -> std::io::Result<()> {
    let info = ServerInfo {
        url: url.to_owned(),
        pid: std::process::id(),
    };
    write_atomic(
        &data_dir.join(SERVER_FILE),
        &serde_json::to_vec(&info).map_err(std::io::Error::other)?,
    )
}

/// Remove the server file if this process wrote it.
pub fn withdraw(data_dir: &Path) {
    let path = data_dir.join(SERVER_FILE);
    if read_server_file(&path).is_some_and(|info| info.pid == std::process::id())
        && let Err(error) = std::fs::remove_file(&path)
    {
        // Harmless: a server file whose process is gone is ignored by whoever reads it.
        tracing::warn!(%error, file = %path.display(), "could not remove the server file");
    }
}

fn read_server_file(path: &Path) -> Option<ServerInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The node running on `data_dir`, if its server file names a live process and its token is
/// there. (A file left by a node that was killed names a process that is gone.)
pub fn running_node(data_dir: &Path) -> Option<RunningNode> {
    let info = read_server_file(&data_dir.join(SERVER_FILE))?;
    if !process_alive(info.pid) {
        return None;
    }
    let token = std::fs::read_to_string(data_dir.join(TOKEN_FILE)).ok()?;
    Some(RunningNode {
        url: info.url,
        pid: info.pid,
        token: token.trim().to_owned(),
    })
}

/// The operating system's number for an input/output error (the same on Linux and macOS).
const EIO: i32 = 5;

/// An error writing or reading Hearth's data folder, in words that say what the owner can do:
/// a full disk, a read-only one, a folder Hearth may not write to, a failing disk. Other
/// errors read as the system gives them.
pub fn explain_io(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let what = match error.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            "the disk is full: free some space, then start Hearth again"
        }
        ErrorKind::ReadOnlyFilesystem => {
            "the disk is read-only: make it writable again, or start Hearth with another data folder"
        }
        ErrorKind::PermissionDenied => "Hearth may not write there (check the folder's owner)",
        _ if error.raw_os_error() == Some(EIO)
            || error.to_string().contains("Input/output error") =>
        {
            "the disk reports errors and may be failing: check it, then start Hearth again"
        }
        _ => return error.to_string(),
    };
    format!("{what} ({error})")
}

/// Write `bytes` to `path` whole or not at all: into a temporary file beside it, synced, then
/// renamed over it, and the folder synced. A crash or a full disk leaves the old file or the
/// new one, never half of one (and no temporary file when the write itself failed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = write_temporary(path, bytes, false)?;
    if let Err(error) = std::fs::rename(&temporary, path) {
        discard(&temporary);
        return Err(error);
    }
    sync_folder(path)
}

/// Create `path` with `bytes`, readable by this user alone (mode 0600 on Unix), whole or not at
/// all as [`write_atomic`] does, but never replacing a file that is there: that is an error
/// (`AlreadyExists`). A key or token is replaced only by removing the old one first.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = write_temporary(path, bytes, true)?;
    // A hard link puts the file in place only where there is none, in one step.
    let placed = std::fs::hard_link(&temporary, path);
    discard(&temporary);
    placed?;
    sync_folder(path)
}

/// `bytes` in a synced temporary file beside `path` (private: mode 0600); removed again if
/// anything fails.
fn write_temporary(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private; // the user's own folder is private on Windows
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written {
        Ok(()) => Ok(temporary),
        Err(error) => {
            discard(&temporary);
            Err(error)
        }
    }
}

/// Remove a temporary file that is no longer wanted; a failure is logged (it is only litter).
fn discard(temporary: &Path) {
    if let Err(error) = std::fs::remove_file(temporary)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, file = %temporary.display(), "could not remove a temporary file");
    }
}

/// Make a rename or link in `path`'s folder durable (Unix; Windows has no folder handle to sync).
pub fn sync_folder(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(folder)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Whether process `pid` exists and has not exited (a zombie waiting to be reaped has).
pub fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name, which is in parentheses and may hold any
            // character: look after the last ')'.
            Ok(stat) => stat
                .rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    } else {
        // Elsewhere the caller's next request to the API tells.
        true
    }
}

/// The program `name` in the folder of the running executable (where Hearth installs its
/// programs side by side, and where cargo builds them).
pub fn sibling_program(name: &str) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| std::io::Error::other("the executable has no folder"))?;
    Ok(dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// On Windows the data folder is in the roaming application data (`%APPDATA%`), where a
    /// profile that moves between machines takes the ledger along.
    #[cfg(windows)]
    #[test]
    fn on_windows_the_data_folder_is_in_appdata() {
        let appdata = std::env::var_os("APPDATA").expect("Windows sets %APPDATA%");
        assert_eq!(
            DataFolder::Hearth
                .resolve(|_| None, dirs::data_dir())
                .unwrap(),
            PathBuf::from(appdata).join(APP_IDENTIFIER)
        );
    }

    #[test]
    fn every_program_of_hearth_shares_one_folder_and_a_pool_has_its_own() {
        let platform = tempfile::tempdir().unwrap();
        let unset = |_: &str| None;
        let base = Some(platform.path().to_owned());
        assert_eq!(
            DataFolder::Hearth.resolve(unset, base.clone()),
            Ok(platform.path().join("app.hearth.desktop"))
        );
        assert_eq!(
            DataFolder::Pool.resolve(unset, base.clone()),
            Ok(platform.path().join("hearth-pool"))
        );
        let set = |name: &str| (name == "HEARTH_DATA_DIR").then(|| "/srv/hearth".into());
        assert_eq!(
            DataFolder::Hearth.resolve(set, base.clone()),
            Ok(PathBuf::from("/srv/hearth"))
        );
        assert_eq!(
            DataFolder::Pool.resolve(set, base.clone()),
            Ok(platform.path().join("hearth-pool"))
        );
        assert_eq!(
            DataFolder::Hearth
                .resolve(unset, None)
                .unwrap_err()
                .to_string(),
            "this system names no data folder (set HEARTH_DATA_DIR)"
        );
        // A headless node's older folder is kept until the shared one exists.
        std::fs::create_dir(platform.path().join("hearth")).unwrap();
        assert_eq!(
            DataFolder::Hearth.resolve(unset, base.clone()),
            Ok(platform.path().join("hearth"))
        );
        std::fs::create_dir(platform.path().join("app.hearth.desktop")).unwrap();
        assert_eq!(
            DataFolder::Hearth.resolve(unset, base),
            Ok(platform.path().join("app.hearth.desktop"))
        );
    }

    #[test]
    fn a_published_address_is_found_until_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(running_node(dir.path()), None, "nothing published");
        publish(dir.path(), "http://127.0.0.1:4242").unwrap();
        assert_eq!(running_node(dir.path()), None, "no token yet");
        std::fs::write(dir.path().join(TOKEN_FILE), "secret\n").unwrap();
        assert_eq!(
            running_node(dir.path()),
            Some(RunningNode {
                url: "http://127.0.0.1:4242".into(),
                pid: std::process::id(),
                token: "secret".into(),
            })
        );
        withdraw(dir.path());
        assert_eq!(running_node(dir.path()), None);
        assert!(!dir.path().join(SERVER_FILE).exists());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn an_exited_child_is_not_alive_even_before_it_is_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        assert!(process_alive(std::process::id()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while process_alive(child.id()) {
            assert!(std::time::Instant::now() < deadline, "still alive");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
    }

    #[test]
    fn a_file_left_by_a_dead_process_or_garbage_is_no_node() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), "secret").unwrap();
        // Beyond Linux's pid_max: no such process.
        let stale = ServerInfo {
            url: "http://127.0.0.1:1".into(),
            pid: 4_194_305,
        };
        std::fs::write(
            dir.path().join(SERVER_FILE),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(running_node(dir.path()), None);
        }
        // Someone else's file is not removed by withdraw.
        withdraw(dir.path());
        assert!(dir.path().join(SERVER_FILE).exists());
        std::fs::write(dir.path().join(SERVER_FILE), b"{ not json").unwrap();
        assert_eq!(running_node(dir.path()), None);
    }

    /// Names in `dir`, sorted: what a crash or a failed write would leave lying about.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn private_files_are_whole_owner_only_and_never_replace_one_that_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        write_private(&key, b"first").unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = write_private(&key, b"second").unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&key).unwrap(), b"first", "the key is kept");
        assert_eq!(names(dir.path()), ["node.key"], "no temporary file is left");
    }

    #[test]
    fn atomic_writes_replace_the_whole_file_and_leave_nothing_when_they_fail() {
        let dir = tempfile::tempdir().unwrap();
        let settings = dir.path().join("config.toml");
        write_atomic(&settings, b"a = 1\n").unwrap();
        write_atomic(&settings, b"a = 2\n").unwrap();
        assert_eq!(std::fs::read(&settings).unwrap(), b"a = 2\n");
        assert_eq!(names(dir.path()), ["config.toml"]);
        // Into a folder that is not there: an error, and no litter anywhere.
        let nowhere = dir.path().join("missing/config.toml");
        assert!(write_atomic(&nowhere, b"x").is_err());
        assert_eq!(names(dir.path()), ["config.toml"]);
    }
}
