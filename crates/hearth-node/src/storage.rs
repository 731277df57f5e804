//! Storage faults are a state, not a crash. When a write to the data folder fails (a full
//! disk, a read-only or failing one), the node pauses with the reason in words ("the disk is
//! full: 120 MB more free space is needed"), so it takes no work it could not record and gives
//! back what runs; it then tries again, backing off, and works again by itself once a write
//! succeeds. Receipts the pool issued meanwhile are collected by the worker when it resumes.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_ledger::Ledger;

use crate::Node;
use crate::status::PauseReason;

/// Free space Hearth wants on its data folder's disk before it calls the disk "not full":
/// room for the ledger's log segments and a snapshot.
pub const HEADROOM_BYTES: u64 = 64 << 20;

/// The first wait before trying again, and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(30);

/// A write to the data folder that failed, as the operating system reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    pub kind: ErrorKind,
    /// `ENOSPC`'s, `EDQUOT`'s and the like: what tells a full disk from a failing one.
    pub os_code: Option<i32>,
    pub message: String,
}

impl WriteFailure {
    pub fn from_io(error: &std::io::Error) -> Self {
        Self {
            kind: error.kind(),
            os_code: error.raw_os_error(),
            message: error.to_string(),
        }
    }

    /// The failure of a ledger operation, when the disk refused it (`None` for other errors:
    /// a damaged record, a receipt that does not verify).
    pub fn from_ledger(error: &hearth_ledger::LedgerError) -> Option<Self> {
        error.storage_fault().map(Self::from_io)
    }

    /// The disk (or the owner's quota on it) is full.
    pub fn is_disk_full(&self) -> bool {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        self.kind == ErrorKind::StorageFull
            || self.kind == ErrorKind::QuotaExceeded
            || (cfg!(unix) && matches!(self.os_code, Some(ENOSPC | EDQUOT)))
    }

    /// The pause this failure puts the node in.
    fn reason(&self, data_dir: &Path) -> PauseReason {
        if self.is_disk_full() {
            // 0 when the disk shows room yet refuses (a quota, a disk short of inodes).
            let free = free_bytes(data_dir).unwrap_or(HEADROOM_BYTES);
            PauseReason::DiskFull {
                needed_bytes: HEADROOM_BYTES.saturating_sub(free),
            }
        } else if self.kind == ErrorKind::ReadOnlyFilesystem {
            PauseReason::StorageFailing {
                error: "the disk is read-only".into(),
            }
        } else if self.kind == ErrorKind::PermissionDenied {
            PauseReason::StorageFailing {
                error: "Hearth may no longer write to its folder".into(),
            }
        } else {
            PauseReason::StorageFailing {
                error: format!("the disk reports an error: {}", self.message),
            }
        }
    }
}

/// Watches over the data folder's writes for a [`crate::RunningNode`].
#[derive(Debug)]
pub struct StorageHealth {
    node: Node,
    ledger: Arc<Ledger>,
    data_dir: PathBuf,
    /// A recovery is under way (one at a time).
    recovering: std::sync::atomic::AtomicBool,
}

impl StorageHealth {
    pub fn new(node: Node, ledger: Arc<Ledger>, data_dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            node,
            ledger,
            data_dir,
            recovering: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the node is paused for a storage fault now.
    pub fn is_faulted(&self) -> bool {
        self.recovering.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A write failed with `failure`: pause the node for it and keep trying until a write
    /// succeeds (a second failure while trying changes nothing).
    pub fn failed(self: &Arc<Self>, failure: &WriteFailure) {
        if self
            .recovering
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let reason = failure.reason(&self.data_dir);
        tracing::error!(error = %failure.message, state = %reason.describe(), "a write to the data folder failed; pausing until one succeeds");
        self.node.set_storage_fault(Some(reason));
        let health = Arc::clone(self);
        let failure = failure.clone();
        tokio::spawn(async move { health.recover(failure).await });
    }

    /// Try again, backing off, until the ledger opens afresh and takes a write; then lift the
    /// pause. The pause's words follow the disk meanwhile (how much space is still needed).
    async fn recover(self: Arc<Self>, mut failure: WriteFailure) {
        let mut wait = FIRST_RETRY;
        loop {
            tokio::time::sleep(wait).await;
            let ledger = Arc::clone(&self.ledger);
            let tried = tokio::task::spawn_blocking(move || {
                ledger.reopen()?;
                ledger.probe_write()
            })
            .await;
            match tried {
                Ok(Ok(())) => {
                    tracing::info!("the data folder takes writes again; working again");
                    self.recovering
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                    self.node.set_storage_fault(None);
                    return;
                }
                Ok(Err(error)) => {
                    if let Some(again) = WriteFailure::from_ledger(&error) {
                        failure = again;
                    }
                    tracing::warn!(%error, retry_in = ?wait, "the data folder still refuses writes");
                }
                Err(error) => tracing::error!(%error, "the storage check failed"),
            }
            self.node
                .set_storage_fault(Some(failure.reason(&self.data_dir)));
            wait = (wait * 2).min(LONGEST_RETRY);
        }
    }
}

/// Open the ledger in `dir`; when it is damaged beyond opening, move it aside (never deleted:
/// `ledger.damaged-<time>` beside it), start a new one and say so in the returned notice. The
/// worker collects every receipt the pool issued to this node when it joins, so the earnings
/// come back into the new ledger; jobs that earned nothing are the only history lost.
pub fn open_ledger(dir: &Path) -> Result<(Ledger, Option<String>), hearth_ledger::LedgerError> {
    match Ledger::open(dir) {
        Ok(ledger) => Ok((ledger, None)),
        Err(error) if error.is_damage() => {
            let aside = dir.with_file_name(format!(
                "{}.damaged-{}",
                dir.file_name()
                    .map_or("ledger".into(), |n| n.to_string_lossy()),
                hearth_protocol::now_unix_ms() / 1000
            ));
            std::fs::rename(dir, &aside).map_err(hearth_ledger::LedgerError::Export)?;
            tracing::error!(%error, moved_to = %aside.display(), "the ledger is damaged; it was moved aside and a new one started");
            let ledger = Ledger::open(dir)?;
            ledger.set_setting(DAMAGED_LEDGER_SETTING, &aside.display().to_string())?;
            Ok((ledger, Some(damaged_notice(&aside.display().to_string()))))
        }
        Err(error) => Err(error),
    }
}

/// The ledger setting naming where a damaged ledger was moved (told until the owner has seen
/// receipts come back).
pub const DAMAGED_LEDGER_SETTING: &str = "damaged_ledger_moved_to";

/// What the owner is told after a damaged ledger was moved aside.
pub fn damaged_notice(moved_to: &str) -> String {
    format!(
        "The earnings ledger was damaged and could not be read. It was moved to {moved_to} (nothing was deleted) and a new one started; your receipts are collected again from the pool."
    )
}

/// What the owner is told when the end of the ledger's log was lost (the disk damaged it, and
/// sled opened what came before).
pub fn lost_receipts_notice(lost: &hearth_ledger::LostReceipts) -> String {
    let count = lost.count();
    let receipts = if count == 1 {
        "receipt".to_owned()
    } else {
        format!("{count} receipts")
    };
    format!(
        "The disk damaged the end of the earnings ledger: its newest {receipts} went missing. They are collected again from the pool; nothing is counted twice."
    )
}

/// Free bytes for Hearth on the disk that holds `dir` (`None` where it cannot be told).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    fs2::available_space(dir).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: ErrorKind, os_code: Option<i32>) -> WriteFailure {
        WriteFailure {
            kind,
            os_code,
            message: "x".into(),
        }
    }

    /// A ledger sled cannot read is moved aside with everything in it, a new one opens, and
    /// the owner is told where the old one went.
    #[test]
    fn a_damaged_ledger_is_moved_aside_and_a_new_one_started() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ledger");
        {
            let ledger = Ledger::open(&dir).unwrap();
            ledger.set_setting("kept", &1u32).unwrap();
        }
        // A finished snapshot full of garbage: sled refuses the database as corrupt.
        std::fs::write(
            dir.join(format!("snap.{:016X}", u64::MAX >> 8)),
            vec![0x5a; 4096],
        )
        .unwrap();
        let (ledger, notice) = open_ledger(&dir).unwrap();
        let notice = notice.expect("the owner is told");
        let moved: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("ledger.damaged-"))
            .collect();
        assert_eq!(moved.len(), 1);
        assert!(notice.contains(&moved[0]), "{notice}");
        assert!(
            root.path().join(&moved[0]).join("db").exists(),
            "nothing deleted"
        );
        assert_eq!(ledger.setting::<u32>("kept").unwrap(), None, "a new ledger");
        assert!(
            ledger
                .setting::<String>(DAMAGED_LEDGER_SETTING)
                .unwrap()
                .is_some_and(|to| to.ends_with(&moved[0]))
        );
        // A healthy ledger opens as it is, with nothing to tell.
        drop(ledger);
        assert!(open_ledger(&dir).unwrap().1.is_none());
    }

    /// A full disk says how much room is wanted; read-only and failing disks say so.
    #[test]
    fn each_fault_reads_as_what_the_owner_can_do_about_it() {
        let dir = tempfile::tempdir().unwrap();
        let full = failure(ErrorKind::StorageFull, Some(28)).reason(dir.path());
        let PauseReason::DiskFull { needed_bytes } = full else {
            panic!("{full:?}");
        };
        // This disk has room: the disk refuses for another reason (a quota).
        assert_eq!(needed_bytes, 0);
        assert_eq!(
            full.describe(),
            "the disk is full; Hearth resumes by itself once it can save again"
        );
        assert_eq!(
            PauseReason::DiskFull {
                needed_bytes: 119_500_000
            }
            .describe(),
            "the disk is full: 120 MB more free space is needed; Hearth resumes by itself"
        );
        assert_eq!(
            failure(ErrorKind::ReadOnlyFilesystem, Some(30))
                .reason(dir.path())
                .describe(),
            "Hearth cannot save its data: the disk is read-only; it resumes by itself once it can"
        );
        let eio = failure(ErrorKind::Other, Some(5)).reason(dir.path());
        assert!(
            eio.describe().contains("the disk reports an error"),
            "{}",
            eio.describe()
        );
        assert!(!eio.can_override());
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
    }
}
