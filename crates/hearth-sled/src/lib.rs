//! How Hearth opens its sled databases: the node's ledger and a pool's store (sled, the
//! single-process pool). Both wait a moment for a lock the previous process still holds, keep
//! a small page cache and flush when their writers say so. What an interrupted snapshot left
//! behind is cleared first, and a failure says what is wrong: another process, a full disk, a
//! read-only disk or a folder Hearth may not write to.

use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

/// The most memory a database's page cache holds.
const DATABASE_CACHE_BYTES: u64 = 16 << 20;

/// How long [`open`] waits for another holder to let go of a database.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Open (or create) the sled database in `dir`, waiting up to a few seconds for its lock.
///
/// sled locks the database file for as long as it is open, and a dropped `sled::Db` lets go
/// of the lock only when its background threads finish, a moment later; a Hearth restarted
/// quickly meets the same moment while the old process exits. A lock still held after the wait
/// is another running process, and the error says so.
///
/// Every writer flushes what must survive a crash itself (and sled flushes on close), so there
/// is no periodic flush: its thread would wake twice a second for the life of the app. The
/// page cache is capped well below sled's 1 GiB default: Hearth's records are small and it
/// lives in the tray for days.
pub fn open(dir: &Path) -> sled::Result<sled::Db> {
    remove_unfinished_snapshots(dir);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(5);
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(DATABASE_CACHE_BYTES)
        .flush_every_ms(None);
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(sled::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "{} is in use by another process (is another Hearth running?): {e}",
                            dir.display()
                        ),
                    )));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other.map_err(|e| explain(dir, e)),
        }
    }
}

/// Remove the snapshots sled began and never finished. sled writes a snapshot to
/// `snap.<lsn>.generating` and renames it to `snap.<lsn>` once it is complete and synced; but
/// when it opens, it reads the highest-named `snap.` file, and a `.generating` one (left
/// empty or short by a full disk or a crash) names higher than any finished one. sled then
/// reports the database as corrupt, and it stays so, although every record is intact in its
/// log. An unfinished snapshot holds nothing the log does not, so it goes.
fn remove_unfinished_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return; // a new database, or one sled will report on
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::warn!(
                    file = %entry.path().display(),
                    "removed a snapshot an earlier run did not finish"
                ),
                Err(error) => tracing::error!(
                    %error,
                    file = %entry.path().display(),
                    "cannot remove an unfinished snapshot; the database may not open"
                ),
            }
        }
    }
}

/// The error of opening `dir`, said so the owner knows what to do.
fn explain(dir: &Path, error: sled::Error) -> sled::Error {
    let sled::Error::Io(io) = error else {
        return error;
    };
    let what = match io.kind() {
        ErrorKind::StorageFull => "the disk is full: free some space, then start Hearth again",
        ErrorKind::ReadOnlyFilesystem => "the disk is read-only",
        ErrorKind::PermissionDenied => "Hearth may not write there (check the folder's owner)",
        _ => return sled::Error::Io(io),
    };
    sled::Error::Io(std::io::Error::new(
        io.kind(),
        format!("{}: {what} ({io})", dir.display()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A database whose holder lets go within the wait opens; one held throughout is refused with
    /// an error that says another process has it.
    #[test]
    fn opening_waits_for_a_released_lock_and_names_a_held_one() {
        let dir = tempfile::tempdir().unwrap();
        let held = open(dir.path()).unwrap();
        held.insert("kept", b"yes".to_vec()).unwrap();
        held.flush().unwrap();

        let error = open(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("in use by another process"),
            "{error}"
        );

        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let reopened = open(dir.path()).unwrap();
        assert_eq!(reopened.get("kept").unwrap().as_deref(), Some(&b"yes"[..]));
        releaser.join().unwrap();
    }

    /// A start on a full disk left an empty `snap.….generating` behind, and sled then refused
    /// the database as corrupt on every later start (issue 21). It opens, with its records.
    #[test]
    fn an_unfinished_snapshot_is_cleared_and_the_records_are_all_there() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        for i in 0u32..100 {
            db.insert(i.to_be_bytes(), b"receipt".to_vec()).unwrap();
        }
        db.flush().unwrap();
        drop(db);
        let leftover = dir
            .path()
            .join(format!("snap.{:016X}.generating", u64::MAX >> 4));
        std::fs::write(&leftover, b"").unwrap();
        // sled alone refuses it: the leftover names higher than any finished snapshot.
        let config = sled::Config::new().path(dir.path());
        assert!(matches!(config.open(), Err(sled::Error::Corruption { .. })));

        let reopened = open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 100);
        assert_eq!(
            reopened.get(7u32.to_be_bytes()).unwrap().as_deref(),
            Some(&b"receipt"[..])
        );
        assert!(!leftover.exists());
    }
}
