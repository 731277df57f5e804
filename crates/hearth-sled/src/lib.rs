//! How Hearth opens its sled databases: the node's ledger and a pool's store (sled, the
//! single-process pool). Both wait a moment for a lock the previous process still holds, keep
//! a small page cache and flush when their writers say so. What an interrupted write left
//! behind is cleared first (an unfinished snapshot, a torn `conf` file), a database whose
//! creation failed is removed again, and a failure says what is wrong: another process, a
//! full disk, a read-only disk or a folder Hearth may not write to.

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
    let existed = dir.join("db").exists();
    let opened = open_existing_or_new(dir);
    if opened.is_err() && !existed {
        // A database this call began (a full disk, a kill half-way): the folder goes back to
        // how it was, so the next start begins afresh instead of tripping over a torn one.
        if let Err(error) = std::fs::remove_dir_all(dir)
            && error.kind() != ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %dir.display(), "could not remove a database whose creation failed");
        }
    }
    opened
}

fn open_existing_or_new(dir: &Path) -> sled::Result<sled::Db> {
    remove_unfinished_snapshots(dir);
    remove_torn_conf(dir);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(5);
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(DATABASE_CACHE_BYTES)
        .flush_every_ms(None);
    loop {
        // sled panics in a destructor when the disk fails it while it closes what a failed
        // open began (it syncs with `unwrap`); that is an error here, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .unwrap_or_else(|_| {
                Err(sled::Error::Io(std::io::Error::other(
                    "the database failed while it was opened (see the error before this one)",
                )))
            });
        match opened {
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

/// How long a flush may wait before it is nudged ([`flush`]).
const FLUSH_NUDGE: Duration = Duration::from_millis(500);

/// Make everything written to `db` durable, as `sled::Db::flush`, but never hang on a disk
/// error. When sled's background writer fails (a full disk), it records the error without
/// waking a flush already waiting for that write, and the flush would wait forever (with the
/// ledger's writer lock held). Any later flush sees the error and wakes the waiters, so a
/// flush still waiting after a moment is nudged by another.
pub fn flush(db: &sled::Db) -> sled::Result<usize> {
    std::thread::scope(|scope| {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(FLUSH_NUDGE)
            {
                if db.flush().is_err() {
                    // The error is recorded, and the waiting flush woken to return it.
                    return;
                }
            }
        });
        let flushed = db.flush();
        drop(done);
        flushed
    })
}

/// Close a database (or drop the last of its trees) without letting sled's destructor take the
/// process down: when the disk fails the final sync of a database that has not seen an error
/// yet, sled panics (`sync_all().unwrap()`). That is logged instead; everything acknowledged
/// was synced before.
pub fn close<T>(database: T) {
    quiet_panics_while_closing();
    CLOSING.with(|closing| closing.set(true));
    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(database)));
    CLOSING.with(|closing| closing.set(false));
    if closed.is_err() {
        tracing::warn!(
            "the disk failed the database's last sync as it closed; nothing acknowledged is lost"
        );
    }
}

thread_local! {
    /// This thread is in [`close`]: a panic here is sled's, caught and logged there.
    static CLOSING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keep the panic report of sled's destructor off standard error (it is caught and logged as
/// a warning); every other panic is reported as before.
fn quiet_panics_while_closing() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CLOSING.with(std::cell::Cell::get) {
                report(info);
            }
        }));
    });
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

/// Remove a `conf` file whose write was cut short. sled writes its storage parameters to
/// `conf` when a database is created, in place and without syncing; a full disk or a kill in
/// between leaves a few bytes without their checksum, and sled then refuses the database for
/// good. The parameters are this module's (the same at every open), so sled writes the file
/// again from them.
fn remove_torn_conf(dir: &Path) {
    let path = dir.join("conf");
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    if bytes.len() <= 8 {
        return; // sled itself treats it as absent
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(body);
    if hasher.finalize().to_le_bytes() == crc {
        return;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(file = %path.display(), "removed a torn database settings file; it is written again")
        }
        Err(error) => {
            tracing::error!(%error, file = %path.display(), "cannot remove a torn database settings file")
        }
    }
}

/// An error of the database in `dir`, said so the owner knows what to do (see
/// [`hearth_instance::explain_io`]); errors that are not the disk's are returned as they are.
pub fn explain(dir: &Path, error: sled::Error) -> sled::Error {
    let sled::Error::Io(io) = error else {
        return error;
    };
    let explained = hearth_instance::explain_io(&io);
    if explained == io.to_string() {
        return sled::Error::Io(io);
    }
    sled::Error::Io(std::io::Error::new(
        io.kind(),
        format!("{}: {explained}", dir.display()),
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

    /// A `conf` cut short before its checksum (a full disk or a kill while a database was
    /// created) made sled refuse the database for good; it is written again and the records
    /// are all there.
    #[test]
    fn a_torn_conf_file_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        db.insert("kept", b"yes".to_vec()).unwrap();
        db.flush().unwrap();
        drop(db);
        let conf = dir.path().join("conf");
        let whole = std::fs::read(&conf).unwrap();
        std::fs::write(&conf, &whole[..whole.len() - 4]).unwrap();
        let reopened = open(dir.path()).unwrap();
        assert_eq!(reopened.get("kept").unwrap().as_deref(), Some(&b"yes"[..]));
        drop(reopened);
        assert_eq!(std::fs::read(&conf).unwrap(), whole);
    }

    /// A database whose creation fails leaves nothing behind.
    #[test]
    fn a_failed_creation_leaves_the_folder_as_it_was() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("ledger");
        // A folder where sled writes its `conf` file: the creation fails half-way.
        std::fs::create_dir_all(dir.join("conf")).unwrap();
        assert!(open(&dir).is_err());
        assert!(!dir.exists(), "the half-made database is gone");
        assert!(open(&dir).is_ok(), "and the next start creates it afresh");
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
