//! The Hearth node.
//!
//! `hearth-node` owns the node's state and is the one API that the desktop shell, the
//! headless server and the command line all call. Frontends never keep state of their own:
//! they call [`Node`] and render the [`NodeEvent`]s it broadcasts.

mod bindings;
mod node;
mod status;

pub use bindings::typescript_bindings;
pub use node::Node;
pub use status::{ActivityState, ControlSource, NodeEvent, NodeStatus, PauseReason};
