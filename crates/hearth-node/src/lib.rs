//! The Hearth node.
//!
//! `hearth-node` owns the node's state and is the one API that the desktop shell, the
//! headless server and the command line all call. Frontends never keep state of their own:
//! they call [`Node`] and render the [`NodeEvent`]s it broadcasts.
//!
//! [`worker`] joins a pool and runs its jobs with [`executor::Executor`] (Hearth's models),
//! recording every job and receipt in the ledger (`hearth-ledger`). [`pause`] decides when
//! the node works, throttles or pauses for its owner.

mod bindings;
pub mod config;
mod demo_pool;
pub mod diagnostics;
pub mod earnings;
pub mod executor;
pub mod model_fetch;
mod node;
pub mod pause;
pub mod resources;
pub mod running;
pub mod server;
mod status;
pub mod storage;
pub mod views;
pub mod worker;

pub use bindings::typescript_bindings;
pub use config::NodeConfig;
pub use node::{Node, OverrideRefused};
pub use running::{RunningNode, StartError, StartOptions};
pub use status::{
    ActivityState, ControlSource, Earnings, GpuLive, JobState, JobSummary, ModelDownload,
    NewVersion, NodeEvent, NodeStatus, Overview, PauseOverride, PauseReason, PoolStatus, PoolTerms,
    Telemetry,
};
