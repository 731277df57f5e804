//! Storage fault injection for Hearth's tests, the way SQLite and FoundationDB test theirs.
//!
//! [`library`] is a small C library (`faultinject.c`, built with this crate) preloaded into a
//! real process (`LD_PRELOAD`). It numbers every storage write the process makes under one
//! folder (data writes, syncs, truncations, creations, renames, links) and, once armed, fails
//! them with the errno of a [`Mode`] until healed, or kills the process at one. An
//! [`Injection`] is the environment that arms it.

use std::path::Path;

/// The compiled library, for `LD_PRELOAD`.
#[cfg(target_os = "linux")]
pub fn library() -> &'static Path {
    Path::new(env!("HEARTH_FAULT_LIBRARY"))
}

/// How an armed write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// ENOSPC: the disk is full.
    DiskFull,
    /// EIO: the disk is failing.
    IoError,
    /// EROFS: the system made the disk read-only (as Linux does to a file system with errors).
    ReadOnly,
    /// The process is killed (SIGKILL) at the write.
    Kill,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 4] = [Mode::DiskFull, Mode::IoError, Mode::ReadOnly, Mode::Kill];

    /// The library's name for it (`HEARTH_FAULT_MODE`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::DiskFull => "enospc",
            Mode::IoError => "eio",
            Mode::ReadOnly => "erofs",
            Mode::Kill => "kill",
        }
    }
}

/// The environment of a process with the library preloaded: which folder's writes it numbers
/// and when they fail.
#[derive(Clone, Debug)]
pub struct Injection {
    env: Vec<(&'static str, String)>,
}

impl Injection {
    /// Number the writes under `dir`; none fails until armed.
    #[cfg(target_os = "linux")]
    pub fn watching(dir: &Path) -> Self {
        Self {
            env: vec![
                ("LD_PRELOAD", library().display().to_string()),
                ("HEARTH_FAULT_DIR", dir.display().to_string()),
            ],
        }
    }

    /// Write number `at` (counted from 1) and every one after it fail by `mode` (a kill
    /// happens at `at` alone).
    pub fn failing_from(self, at: usize, mode: Mode) -> Self {
        self.with("HEARTH_FAULT_AT", at.to_string())
            .with("HEARTH_FAULT_MODE", mode.name().into())
    }

    /// Writes fail by `mode` while the file `trigger` exists: a disk that fills when the
    /// test chooses.
    pub fn failing_while(self, trigger: &Path, mode: Mode) -> Self {
        self.with("HEARTH_FAULT_TRIGGER", trigger.display().to_string())
            .with("HEARTH_FAULT_MODE", mode.name().into())
    }

    /// Once the file `heal` exists, writes go through again (the owner freed space).
    pub fn healed_by(self, heal: &Path) -> Self {
        self.with("HEARTH_FAULT_HEAL", heal.display().to_string())
    }

    /// One line per numbered write into `log`: "N operation path" (see [`writes_logged`]).
    pub fn logging_to(self, log: &Path) -> Self {
        self.with("HEARTH_FAULT_LOG", log.display().to_string())
    }

    fn with(mut self, name: &'static str, value: String) -> Self {
        self.env.push((name, value));
        self
    }

    /// The variables to set, as `(name, value)`.
    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// The numbered writes logged so far ("N operation path" each).
pub fn writes_logged(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
