//! Game detection by process: a shipped, editable list ([`GameList::builtin`], from
//! `games.toml`) plus the user's own entries. A process is a game when its executable lies
//! under a game library folder (Steam's `steamapps/common`, Epic, GOG, Lutris…), when it is a
//! Windows program run through Wine/Proton (an `.exe` that is not a known helper), or when its
//! name is on the list.

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
        toml::from_str(include_str!("../games.toml")).unwrap_or_default()
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

    /// Every game process under `procfs` (normally `/proc`), `exclude_pid` left out.
    pub fn scan(&self, procfs: &Path, exclude_pid: u32) -> Vec<GameProcess> {
        let Ok(entries) = std::fs::read_dir(procfs) else {
            return Vec::new();
        };
        let mut found: Vec<GameProcess> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                if pid == exclude_pid {
                    return None;
                }
                let dir = entry.path();
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
            })
            .collect();
        found.sort_by_key(|g| g.pid);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mine = list.with_user_entries(&["MyGame".into(), "/srv/games/".into()]);
        assert!(mine.matches("mygame", "/x").is_some());
        assert!(mine.matches("anything", "/srv/games/thing").is_some());
    }
}
