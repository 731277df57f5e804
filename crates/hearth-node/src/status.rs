//! The node's observable state and the events that announce its changes.
//!
//! Every type here crosses the IPC boundary, so each derives [`TS`] and the UI's
//! TypeScript copy is generated from it (see [`crate::typescript_bindings`]).

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Who asked the node to change its state. Shown to the user ("Paused from the tray").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ControlSource {
    /// A button in the window.
    Window,
    /// The tray icon's menu.
    Tray,
    /// The command line or the headless API.
    Cli,
}

/// Why the node is not taking work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PauseReason {
    /// The owner paused it by hand.
    User {
        /// Where the owner clicked.
        source: ControlSource,
    },
}

impl PauseReason {
    /// A short sentence for a status line, e.g. "paused from the tray".
    pub fn describe(&self) -> String {
        match self {
            PauseReason::User { source } => {
                let place = match source {
                    ControlSource::Window => "the window",
                    ControlSource::Tray => "the tray",
                    ControlSource::Cli => "the command line",
                };
                format!("paused from {place}")
            }
        }
    }
}

/// Whether the node is lending its GPU right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivityState {
    /// Taking and running jobs.
    Running,
    /// Not taking jobs.
    Paused {
        /// Why.
        reason: PauseReason,
    },
}

impl ActivityState {
    /// True when the node is paused for any reason.
    pub fn is_paused(&self) -> bool {
        matches!(self, ActivityState::Paused { .. })
    }
}

/// A snapshot of the node's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct NodeStatus {
    /// Running or paused, and why.
    pub activity: ActivityState,
    /// When `activity` last changed, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub changed_at_ms: u64,
    /// Grows by one with every change, so a frontend can drop a snapshot older than one it
    /// already shows (an event and a query answer may arrive in either order).
    #[ts(type = "number")]
    pub revision: u64,
}

/// Everything the node announces, in order, on its broadcast channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// The node started or stopped taking work.
    StatusChanged {
        /// The state after the change.
        status: NodeStatus,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_with_tagged_unions() {
        let status = NodeStatus {
            activity: ActivityState::Paused {
                reason: PauseReason::User {
                    source: ControlSource::Tray,
                },
            },
            changed_at_ms: 1_700_000_000_000,
            revision: 3,
        };
        let json = serde_json::to_value(NodeEvent::StatusChanged { status }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "status_changed",
                "status": {
                    "activity": {"kind": "paused", "reason": {"kind": "user", "source": "tray"}},
                    "changed_at_ms": 1_700_000_000_000_u64,
                    "revision": 3
                }
            })
        );
    }

    #[test]
    fn pause_reason_reads_as_a_sentence() {
        let reason = PauseReason::User {
            source: ControlSource::Window,
        };
        assert_eq!(reason.describe(), "paused from the window");
    }
}
