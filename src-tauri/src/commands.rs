//! The Tauri commands: each forwards to the node and returns what it says.

use hearth_node::{ControlSource, Node, NodeStatus, Overview};
use tauri::State;

use crate::Running;

/// The node's current state.
#[tauri::command]
pub fn node_status(node: State<'_, Node>) -> NodeStatus {
    node.status()
}

/// Pause from the window.
#[tauri::command]
pub fn pause_node(node: State<'_, Node>) -> NodeStatus {
    node.pause(ControlSource::Window)
}

/// Pause from the window for `minutes` (1 to 24 hours' worth), then resume by itself.
#[tauri::command]
pub fn pause_node_for(node: State<'_, Node>, minutes: u32) -> Result<NodeStatus, String> {
    if !(1..=24 * 60).contains(&minutes) {
        return Err(format!("{minutes} minutes: pause for 1 minute to 24 hours"));
    }
    Ok(node.pause_for(
        ControlSource::Window,
        std::time::Duration::from_secs(u64::from(minutes) * 60),
    ))
}

/// Resume from the window.
#[tauri::command]
pub fn resume_node(node: State<'_, Node>) -> NodeStatus {
    node.resume(ControlSource::Window)
}

/// Status, pool, earnings, recent jobs and telemetry. While the node is still starting (or
/// could not start) the answer says so in its pool part.
#[tauri::command]
pub fn node_overview(node: State<'_, Node>, running: State<'_, Running>) -> Overview {
    running.overview(&node)
}
