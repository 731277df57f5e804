//! The Tauri commands: each forwards to the [`Node`] and returns what it says.

use hearth_node::{ControlSource, Node, NodeStatus};
use tauri::State;

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

/// Resume from the window.
#[tauri::command]
pub fn resume_node(node: State<'_, Node>) -> NodeStatus {
    node.resume(ControlSource::Window)
}
