//! How Hearth opens its sled databases: the node's ledger and a pool's store (sled, the
//! single-process pool). Both wait a moment for a lock the previous process still holds, keep
//! a small page cache and flush when their writers say so.

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
            other => return other,
        }
    }
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
}
