//! Game detection by process: a shipped, editable list ([`GameList::builtin`], from
//! `games.toml`) plus the user's own entries. A process is a game when its executable lies
//! under a game library folder (Steam's `steamapps/common`, Epic, GOG, Lutris…), when it is a
//! Windows program run through Wine/Proton (an `.exe` that is not a known helper), or when its
//! name is on the list.
//!
//! [`ProcessScanner`] finds them: on Linux through `/proc`, on Windows through the system's
//! process list (where every program is an `.exe`, so that rule is off: see
//! [`GameList::matches_on_windows`]).

use std::path::Path;

use serde::Deserialize;

/// The rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct GameList {
    /// Folders whose programs are games.
    #[serde(default)]
    pub path_markers: Vec<String>,
    /// `.exe` names that are Wine/launcher helpers, not games (lower case).
    #[serde(default)]
    pub exe_helpers: Vec<String>,
    /// Process names that are games (compared without case).
    #[serde(default)]
    pub names: Vec<String>,
    /// What Settings calls each of `path_markers` ("Steam games (native and Proton)").
    #[serde(default)]
    pub launcher_names: std::collections::BTreeMap<String, String>,
}

/// A running game.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameProcess {
    pub pid: u32,
    /// What to show the user, e.g. "Cyberpunk2077.exe".
    pub name: String,
    /// Which rule matched, e.g. "under /steamapps/common/".
    pub rule: String,
}

impl GameList {
    /// The list that ships with Hearth.
    pub fn builtin() -> Self {
        // The file is part of the source; a parse failure is caught by the tests.
        toml::from_str(include_str!("../../games.toml")).unwrap_or_default()
    }

    /// Leave out the built-in entries (folders or names) the owner turned off.
    pub fn without(mut self, off: &[String]) -> Self {
        self.path_markers.retain(|m| !off.contains(m));
        self.names
            .retain(|n| !off.iter().any(|o| o.eq_ignore_ascii_case(n)));
        self
    }

    /// Add the user's own entries (names, or folders when they contain a `/`).
    pub fn with_user_entries(mut self, entries: &[String]) -> Self {
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if entry.contains('/') {
                self.path_markers.push(entry.to_owned());
            } else {
                self.names.push(entry.to_owned());
            }
        }
        self
    }

    /// Which rule makes a process with this name and executable path a game, if any.
    pub fn matches(&self, name: &str, exe: &str) -> Option<String> {
        if let Some(marker) = self.path_markers.iter().find(|m| exe.contains(m.as_str())) {
            return Some(format!("under {marker}"));
        }
        let lower = name.to_lowercase();
        if lower.ends_with(".exe") && !self.exe_helpers.contains(&lower) {
            return Some("a Windows program (Wine/Proton)".into());
        }
        self.names
            .iter()
            .find(|n| n.to_lowercase() == lower)
            .map(|n| format!("named {n}"))
    }

    /// Which rule makes a program running on Windows itself a game. Every Windows program is an
    /// `.exe`, so the Wine rule is off; folders compare with either slash and without case (as
    /// Windows paths do), names with or without `.exe`.
    pub fn matches_on_windows(&self, name: &str, exe: &str) -> Option<String> {
        let path = exe.replace('\\', "/").to_lowercase();
        if let Some(marker) = self
            .path_markers
            .iter()
            .find(|m| path.contains(&m.to_lowercase()))
        {
            return Some(format!("under {marker}"));
        }
        let lower = name.to_lowercase();
        let stem = lower.strip_suffix(".exe").unwrap_or(&lower);
        self.names
            .iter()
            .find(|n| {
                let n = n.to_lowercase();
                n == lower || n == stem
            })
            .map(|n| format!("named {n}"))
    }

    /// Every game process under `procfs` (normally `/proc`), `exclude_pid` left out.
    pub fn scan(&self, procfs: &Path, exclude_pid: u32) -> Vec<GameProcess> {
        let mut found: Vec<GameProcess> = process_ids(procfs)
            .into_iter()
            .filter(|&pid| pid != exclude_pid)
            .filter_map(|pid| self.check(procfs, pid))
            .collect();
        found.sort_by_key(|g| g.pid);
        found
    }

    /// Whether process `pid` is a game (reads its command line and executable link).
    pub fn check(&self, procfs: &Path, pid: u32) -> Option<GameProcess> {
        let dir = procfs.join(pid.to_string());
        // The command line's first word keeps the full Windows name (comm is cut at 15
        // bytes); kernel threads have none.
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let argv0 = cmdline
            .split(|&b| b == 0)
            .next()
            .filter(|a| !a.is_empty())?;
        let argv0 = String::from_utf8_lossy(argv0).into_owned();
        let exe = std::fs::read_link(dir.join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| argv0.clone());
        let name = argv0
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(&argv0)
            .to_owned();
        let rule = self
            .matches(&name, &exe)
            .or_else(|| self.matches(&name, &argv0))?;
        Some(GameProcess { pid, name, rule })
    }
}

/// The ids of the processes under `procfs`.
pub fn process_ids(procfs: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(procfs) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// Finds games cheaply enough to run several times a second. Listing `/proc` costs about a
/// microsecond per process, too much four times a second on a desktop with hundreds, so a tick
/// reads the newest process id from `/proc/loadavg` and examines only the ids handed out since
/// the last tick (ids are given out in order), plus processes seen less than [`YOUNG`] ago (a
/// new process may still be between fork and exec) and the games it knows (to notice them
/// end). Every [`FULL_RESCAN_EVERY`] ticks, when ids wrap around, or where `loadavg` is
/// missing, it lists and examines everything (a launcher that execs its game much later).
#[cfg(not(windows))]
#[derive(Debug)]
pub struct ProcessScanner {
    list: GameList,
    procfs: std::path::PathBuf,
    exclude_pid: u32,
    known: std::collections::HashMap<u32, Known>,
    ticks: u64,
    last_pid: Option<u32>,
}

#[cfg(not(windows))]
#[derive(Debug)]
struct Known {
    first_seen: std::time::Instant,
    game: Option<GameProcess>,
}

/// How long a new process is re-examined on every tick.
pub const YOUNG: std::time::Duration = std::time::Duration::from_secs(2);
/// Every this many ticks, every process is listed and examined again.
pub const FULL_RESCAN_EVERY: u64 = 40;
/// More new ids than this since the last tick: list everything instead.
#[cfg(not(windows))]
const MAX_NEW_IDS: u32 = 4096;

#[cfg(not(windows))]
impl ProcessScanner {
    /// A scanner of `procfs` with `list`, never reporting `exclude_pid` (Hearth itself).
    pub fn new(list: GameList, procfs: impl Into<std::path::PathBuf>, exclude_pid: u32) -> Self {
        Self {
            list,
            procfs: procfs.into(),
            exclude_pid,
            known: std::collections::HashMap::new(),
            ticks: 0,
            last_pid: None,
        }
    }

    /// The newest process id handed out (last field of `loadavg`).
    fn newest_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.procfs.join("loadavg"))
            .ok()?
            .split_whitespace()
            .nth(4)?
            .parse()
            .ok()
    }

    fn exists(&self, pid: u32) -> bool {
        self.procfs.join(pid.to_string()).exists()
    }

    fn examine(&mut self, pid: u32, now: std::time::Instant) {
        if pid == self.exclude_pid {
            return;
        }
        let game = self.list.check(&self.procfs, pid);
        let first_seen = self.known.get(&pid).map_or(now, |k| k.first_seen);
        self.known.insert(pid, Known { first_seen, game });
    }

    /// The games running now, by pid.
    pub fn scan(&mut self, now: std::time::Instant) -> Vec<GameProcess> {
        self.ticks += 1;
        let newest = self.newest_pid();
        let new_ids = match (self.last_pid, newest) {
            (Some(last), Some(newest)) if newest >= last && newest - last <= MAX_NEW_IDS => {
                Some(last + 1..=newest)
            }
            _ => None,
        };
        self.last_pid = newest;
        match new_ids {
            Some(new_ids) if !self.ticks.is_multiple_of(FULL_RESCAN_EVERY) => {
                for pid in new_ids {
                    if self.exists(pid) {
                        self.examine(pid, now);
                    }
                }
                let recheck: Vec<u32> = self
                    .known
                    .iter()
                    .filter(|(_, k)| k.game.is_some() || now.duration_since(k.first_seen) < YOUNG)
                    .map(|(&pid, _)| pid)
                    .collect();
                for pid in recheck {
                    if self.exists(pid) {
                        self.examine(pid, now);
                    } else {
                        self.known.remove(&pid);
                    }
                }
            }
            _ => {
                let pids = process_ids(&self.procfs);
                let alive: std::collections::HashSet<u32> = pids.iter().copied().collect();
                self.known.retain(|pid, _| alive.contains(pid));
                for pid in pids {
                    self.examine(pid, now);
                }
            }
        }
        let mut games: Vec<GameProcess> =
            self.known.values().filter_map(|k| k.game.clone()).collect();
        games.sort_by_key(|g| g.pid);
        games
    }
}

/// Finds games on Windows: the system's process list (a snapshot per tick, a few hundred
/// entries) with each program's path, read once per process.
#[cfg(windows)]
#[derive(Debug)]
pub struct ProcessScanner {
    list: GameList,
    exclude_pid: u32,
    /// `None` where the system would not be read (said once, in the log).
    system: Option<sysinfo::System>,
}

#[cfg(windows)]
impl ProcessScanner {
    /// A scanner with `list`, never reporting `exclude_pid` (Hearth itself); `procfs` is a
    /// Linux notion and is ignored.
    pub fn new(list: GameList, _procfs: impl Into<std::path::PathBuf>, exclude_pid: u32) -> Self {
        let system = sysinfo::System::new()
            .map_err(|error| tracing::error!(%error, "game detection is off: the process list cannot be read"))
            .ok();
        Self {
            list,
            exclude_pid,
            system,
        }
    }

    /// The games running now, by pid.
    pub fn scan(&mut self, _now: std::time::Instant) -> Vec<GameProcess> {
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, UpdateKind};
        let Some(system) = self.system.as_mut() else {
            return Vec::new();
        };
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().with_exe(UpdateKind::OnlyIfNotSet),
        );
        // A process seen while it starts has no path yet (sysinfo then keeps an empty one):
        // ask again for those.
        let pathless: Vec<sysinfo::Pid> = system
            .processes()
            .iter()
            .filter(|(_, p)| p.exe().is_none_or(|exe| exe.as_os_str().is_empty()))
            .map(|(pid, _)| *pid)
            .collect();
        if !pathless.is_empty() {
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&pathless),
                false,
                ProcessRefreshKind::nothing().with_exe(UpdateKind::Always),
            );
        }
        let mut games: Vec<GameProcess> = system
            .processes()
            .iter()
            .filter(|(pid, _)| pid.as_u32() != self.exclude_pid)
            .filter_map(|(pid, process)| {
                let name = process.name().to_string_lossy().into_owned();
                let exe = process
                    .exe()
                    .map(|path| path.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let rule = self.list.matches_on_windows(&name, &exe)?;
                Some(GameProcess {
                    pid: pid.as_u32(),
                    name,
                    rule,
                })
            })
            .collect();
        games.sort_by_key(|g| g.pid);
        games
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Windows itself every program is an `.exe`: games are known by their folder (either
    /// slash, any case) or their name (with or without `.exe`), never by being an `.exe`.
    #[test]
    fn on_windows_folders_and_names_make_games_and_being_an_exe_does_not() {
        let list = GameList::builtin();
        let rule = |name: &str, exe: &str| list.matches_on_windows(name, exe);
        assert_eq!(
            rule(
                "eldenring.exe",
                r"C:\Program Files (x86)\Steam\SteamApps\common\ELDEN RING\Game\eldenring.exe"
            )
            .as_deref(),
            Some("under /steamapps/common/")
        );
        assert_eq!(
            rule("VALORANT.exe", r"C:\Riot Games\VALORANT\live\VALORANT.exe").as_deref(),
            Some("under /Riot Games/")
        );
        assert_eq!(
            rule("Factorio.exe", r"D:\Factorio\bin\x64\Factorio.exe").as_deref(),
            Some("named factorio")
        );
        assert_eq!(rule("notepad.exe", r"C:\Windows\notepad.exe"), None);
        assert_eq!(
            rule("steam.exe", r"C:\Program Files (x86)\Steam\steam.exe"),
            None
        );
    }

    #[test]
    fn the_builtin_list_parses_and_matches_what_it_should() {
        let list = GameList::builtin();
        assert!(list.path_markers.len() >= 5 && list.names.len() >= 10);
        let game = |name: &str, exe: &str| list.matches(name, exe).is_some();
        assert!(game(
            "eldenring",
            "/home/p/.steam/steam/steamapps/common/ELDEN RING/eldenring"
        ));
        assert!(game("Cyberpunk2077.exe", "/usr/bin/wine64-preloader"));
        assert!(game("factorio", "/opt/factorio/bin/x64/factorio"));
        assert!(
            !game("steam.exe", "/usr/bin/wine64-preloader"),
            "a launcher helper"
        );
        assert!(!game("firefox", "/usr/lib/firefox/firefox"));
        assert_eq!(
            list.launcher_names
                .get("/steamapps/common/")
                .map(String::as_str),
            Some("Steam games (native and Proton)")
        );
        assert!(
            list.path_markers
                .iter()
                .all(|m| list.launcher_names.contains_key(m)),
            "every folder has a name for Settings"
        );
        let without_steam = list
            .clone()
            .without(&["/steamapps/common/".into(), "FACTORIO".into()]);
        assert!(
            !without_steam
                .path_markers
                .contains(&"/steamapps/common/".to_owned())
        );
        assert!(
            without_steam
                .matches("factorio", "/opt/factorio/bin/x64/factorio")
                .is_none()
        );
        let mine = list.with_user_entries(&["MyGame".into(), "/srv/games/".into()]);
        assert!(mine.matches("mygame", "/x").is_some());
        assert!(mine.matches("anything", "/srv/games/thing").is_some());
    }
}
