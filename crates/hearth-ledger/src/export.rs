//! The job history as CSV, for the owner's own books.

use std::io::Write;

use crate::{JobRecord, Ledger, Result, decode};

impl Ledger {
    /// Every job as CSV, oldest first.
    pub fn export_csv(&self, out: &mut dyn Write) -> Result<u64> {
        writeln!(
            out,
            "job_id,model,task,status,started_unix_ms,ended_unix_ms,units,micro_credits,energy_wh,energy_estimated,receipt_sequence"
        )?;
        let mut rows = 0;
        for entry in self.t()?.jobs.iter() {
            let (key, bytes) = entry?;
            let r: JobRecord = decode(&key, &bytes)?;
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&r.job_id),
                csv_field(&r.model),
                csv_field(&r.task),
                serde_json::to_value(r.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.started_unix_ms,
                r.ended_unix_ms.map(|v| v.to_string()).unwrap_or_default(),
                r.units,
                r.micro_credits,
                r.energy_wh.map(|v| format!("{v:.6}")).unwrap_or_default(),
                r.energy_estimated,
                r.receipt
                    .as_ref()
                    .map(|s| s.receipt.sequence.to_string())
                    .unwrap_or_default()
            )?;
            rows += 1;
        }
        Ok(rows)
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}
