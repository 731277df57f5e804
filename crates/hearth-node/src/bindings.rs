//! TypeScript declarations for every type the UI receives from the node, generated from the Rust types.
//!
//! The UI imports `ui/src/lib/bindings.ts`. A test compares that file with
//! [`typescript_bindings`] and fails when it is stale; `UPDATE_BINDINGS=1 cargo test -p
//! hearth-node bindings` rewrites it.

use ts_rs::{Config, TS};

use crate::NodeConfig;

use crate::status::{
    ActivityState, ControlSource, Earnings, GpuLive, JobState, JobSummary, ModelDownload,
    NewVersion, NodeEvent, NodeStatus, Overview, PauseOverride, PauseReason, PoolStatus, PoolTerms,
    Telemetry,
};
use crate::views::{
    BackendView, BenchmarkView, EarningsReport, ExpectedEarnings, GameEntryView, GamesView,
    GpuView, HardwareView, HourEarnings, JobPage, JobQuery, ModelEarnings, ModelFitView,
    PeriodEarnings, SeenGame,
};

/// The full text of `ui/src/lib/bindings.ts`.
pub fn typescript_bindings() -> String {
    let cfg = Config::default();
    let declarations = [
        (ControlSource::docs(), ControlSource::decl(&cfg)),
        (PauseReason::docs(), PauseReason::decl(&cfg)),
        (PauseOverride::docs(), PauseOverride::decl(&cfg)),
        (ActivityState::docs(), ActivityState::decl(&cfg)),
        (NodeStatus::docs(), NodeStatus::decl(&cfg)),
        (JobState::docs(), JobState::decl(&cfg)),
        (JobSummary::docs(), JobSummary::decl(&cfg)),
        (Earnings::docs(), Earnings::decl(&cfg)),
        (PoolTerms::docs(), PoolTerms::decl(&cfg)),
        (ModelDownload::docs(), ModelDownload::decl(&cfg)),
        (NewVersion::docs(), NewVersion::decl(&cfg)),
        (PoolStatus::docs(), PoolStatus::decl(&cfg)),
        (GpuLive::docs(), GpuLive::decl(&cfg)),
        (Telemetry::docs(), Telemetry::decl(&cfg)),
        (Overview::docs(), Overview::decl(&cfg)),
        (NodeEvent::docs(), NodeEvent::decl(&cfg)),
        (HourEarnings::docs(), HourEarnings::decl(&cfg)),
        (PeriodEarnings::docs(), PeriodEarnings::decl(&cfg)),
        (ModelEarnings::docs(), ModelEarnings::decl(&cfg)),
        (EarningsReport::docs(), EarningsReport::decl(&cfg)),
        (JobQuery::docs(), JobQuery::decl(&cfg)),
        (JobPage::docs(), JobPage::decl(&cfg)),
        (NodeConfig::docs(), NodeConfig::decl(&cfg)),
        (GpuView::docs(), GpuView::decl(&cfg)),
        (BackendView::docs(), BackendView::decl(&cfg)),
        (ModelFitView::docs(), ModelFitView::decl(&cfg)),
        (BenchmarkView::docs(), BenchmarkView::decl(&cfg)),
        (ExpectedEarnings::docs(), ExpectedEarnings::decl(&cfg)),
        (HardwareView::docs(), HardwareView::decl(&cfg)),
        (GameEntryView::docs(), GameEntryView::decl(&cfg)),
        (SeenGame::docs(), SeenGame::decl(&cfg)),
        (GamesView::docs(), GamesView::decl(&cfg)),
    ];
    let mut out = String::from(
        "// Generated from the Rust types in crates/hearth-node by `typescript_bindings()`.\n\
         // Do not edit: run `UPDATE_BINDINGS=1 cargo test -p hearth-node bindings`.\n",
    );
    for (docs, declaration) in declarations {
        out.push('\n');
        if let Some(docs) = docs {
            out.push_str(&docs);
        }
        out.push_str("export ");
        out.push_str(&declaration);
        out.push('\n');
    }
    // The state's wording, written once in Rust (`status::PAUSE_WORDING`).
    out.push_str("\n/** How the node's state reads (from Rust's `PAUSE_WORDING`); `{name}`-style placeholders. */\n");
    out.push_str("export const PAUSE_WORDING: Readonly<Record<string, string>> = {\n");
    for (key, text) in crate::status::PAUSE_WORDING {
        out.push_str(&format!(
            "  {}: {},\n",
            serde_json::to_string(key).unwrap_or_default(),
            serde_json::to_string(text).unwrap_or_default()
        ));
    }
    out.push_str("};\n");
    out.push_str("\n/** The pauses the owner may work through (from Rust's `OVERRIDABLE`). */\n");
    out.push_str(&format!(
        "export const OVERRIDABLE: readonly string[] = {};\n",
        serde_json::to_string(crate::status::OVERRIDABLE).unwrap_or_default()
    ));
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::typescript_bindings;

    fn committed_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/lib/bindings.ts")
    }

    #[test]
    fn bindings_file_is_current() {
        let fresh = typescript_bindings();
        let path = committed_path();
        if std::env::var_os("UPDATE_BINDINGS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "{} is stale: run `UPDATE_BINDINGS=1 cargo test -p hearth-node bindings` and commit it",
            path.display()
        );
    }

    #[test]
    fn bindings_name_every_ipc_type() {
        let text = typescript_bindings();
        for name in [
            "ControlSource",
            "PauseReason",
            "ActivityState",
            "NodeStatus",
            "JobSummary",
            "Earnings",
            "PoolStatus",
            "Telemetry",
            "Overview",
            "NodeEvent",
            "EarningsReport",
            "JobPage",
            "NodeConfig",
            "HardwareView",
        ] {
            assert!(
                text.contains(&format!("export type {name} =")),
                "{name} missing"
            );
        }
    }
}
