//! What the owner looks back on besides jobs: the node's state changes (pauses, resumes and
//! why) and its resource use a minute at a time.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Ledger, Result, corrupt, decode, encode};

impl Ledger {
    /// Record a change of the node's state (a pause, a resume, and why) at `at_unix_ms`;
    /// flushed (changes are rare).
    pub fn record_activity<T: Serialize>(&self, at_unix_ms: u64, change: &T) -> Result<()> {
        let t = self.t()?;
        let mut key = at_unix_ms.to_be_bytes().to_vec();
        key.extend(t.db.generate_id()?.to_be_bytes());
        t.activity.insert(key, encode(change))?;
        self.flush()?;
        Ok(())
    }

    /// The newest `n` recorded state changes, newest first (unreadable ones left out).
    pub fn recent_activity<T: DeserializeOwned>(&self, n: usize) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in self.t()?.activity.iter().rev() {
            if out.len() >= n {
                break;
            }
            let (key, bytes) = entry?;
            match decode(&key, &bytes) {
                Ok(change) => out.push(change),
                Err(error) => tracing::warn!(%error, "skipping a damaged activity record"),
            }
        }
        Ok(out)
    }

    /// Keep `record` (resource use over the minute before `at_unix_ms`) and forget records
    /// older than `keep_ms`. Not flushed: losing the last minutes in a crash costs nothing.
    pub fn record_telemetry<T: Serialize>(
        &self,
        at_unix_ms: u64,
        record: &T,
        keep_ms: u64,
    ) -> Result<()> {
        let t = self.t()?;
        t.telemetry
            .insert(at_unix_ms.to_be_bytes(), encode(record))?;
        let cutoff = at_unix_ms.saturating_sub(keep_ms).to_be_bytes();
        for key in t.telemetry.range(..cutoff).keys() {
            t.telemetry.remove(key?)?;
        }
        Ok(())
    }

    /// The resource-use records from `from_unix_ms` up to `to_unix_ms`, oldest first
    /// (unreadable ones left out).
    pub fn telemetry_between<T: DeserializeOwned>(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
    ) -> Result<Vec<(u64, T)>> {
        let mut out = Vec::new();
        for entry in self
            .t()?
            .telemetry
            .range(from_unix_ms.to_be_bytes()..to_unix_ms.to_be_bytes())
        {
            let (key, bytes) = entry?;
            let at = u64::from_be_bytes(key.as_ref().try_into().map_err(|e| corrupt(&key, e))?);
            match decode(&key, &bytes) {
                Ok(record) => out.push((at, record)),
                Err(error) => tracing::warn!(%error, "skipping a damaged telemetry record"),
            }
        }
        Ok(out)
    }
}
