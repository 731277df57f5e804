// The one interface the UI talks to. The Tauri window implements it over IPC; the headless
// node will implement it over HTTP and server-sent events. Components never call a transport.

import type { NodeEvent, NodeStatus } from "./bindings";

/** Stops a subscription. */
export type Unsubscribe = () => void;

export interface Backend {
  /** The node's state now. */
  status(): Promise<NodeStatus>;
  /** Stop taking work; resolves with the state after the change. */
  pause(): Promise<NodeStatus>;
  /** Take work again; resolves with the state after the change. */
  resume(): Promise<NodeStatus>;
  /** Receive every node event from now on, in order. */
  subscribe(onEvent: (event: NodeEvent) => void): Promise<Unsubscribe>;
}
