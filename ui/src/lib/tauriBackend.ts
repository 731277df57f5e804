// Backend over Tauri IPC: commands for queries, one event stream for changes.

import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { Backend, Unsubscribe } from "./backend";
import type { NodeEvent, NodeStatus, Overview } from "./bindings";

/** Must match `NODE_EVENT` in src-tauri/src/lib.rs. */
export const NODE_EVENT = "node-event";

export class TauriBackend implements Backend {
  status(): Promise<NodeStatus> {
    return invoke<NodeStatus>("node_status");
  }

  overview(): Promise<Overview> {
    return invoke<Overview>("node_overview");
  }

  pause(): Promise<NodeStatus> {
    return invoke<NodeStatus>("pause_node");
  }

  pauseFor(minutes: number): Promise<NodeStatus> {
    return invoke<NodeStatus>("pause_node_for", { minutes });
  }

  resume(): Promise<NodeStatus> {
    return invoke<NodeStatus>("resume_node");
  }

  async subscribe(onEvent: (event: NodeEvent) => void): Promise<Unsubscribe> {
    return listen<NodeEvent>(NODE_EVENT, (message) => onEvent(message.payload));
  }
}

/** True when the page runs inside the Tauri window. */
export function insideTauri(): boolean {
  return typeof window !== "undefined" && "__TAURI_INTERNALS__" in window;
}
