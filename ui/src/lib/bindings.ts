// Generated from the Rust types in crates/hearth-node by `typescript_bindings()`.
// Do not edit: run `UPDATE_BINDINGS=1 cargo test -p hearth-node bindings`.

/**
 * Who asked the node to change its state. Shown to the user ("Paused from the tray").
 */
export type ControlSource = "window" | "tray" | "cli";

/**
 * Why the node is not taking work.
 */
export type PauseReason = { "kind": "user", 
/**
 * Where the owner clicked.
 */
source: ControlSource, };

/**
 * Whether the node is lending its GPU right now.
 */
export type ActivityState = { "kind": "running" } | { "kind": "paused", 
/**
 * Why.
 */
reason: PauseReason, };

/**
 * A snapshot of the node's state.
 */
export type NodeStatus = { 
/**
 * Running or paused, and why.
 */
activity: ActivityState, 
/**
 * When `activity` last changed, in milliseconds since the Unix epoch.
 */
changed_at_ms: number, 
/**
 * Grows by one with every change, so a frontend can drop a snapshot older than one it
 * already shows (an event and a query answer may arrive in either order).
 */
revision: number, };

/**
 * Everything the node announces, in order, on its broadcast channel.
 */
export type NodeEvent = { "type": "status_changed", 
/**
 * The state after the change.
 */
status: NodeStatus, };
