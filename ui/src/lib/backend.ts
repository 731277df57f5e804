// The one interface the UI talks to. The Tauri window implements it over IPC; the headless
// node implements it over HTTP and server-sent events. Components never call a transport.

import type { NodeEvent, NodeStatus, Overview } from "./bindings";

/** Stops a subscription. */
export type Unsubscribe = () => void;

export interface Backend {
  /** The node's state now. */
  status(): Promise<NodeStatus>;
  /** Status, pool, earnings, recent jobs and telemetry in one answer. */
  overview(): Promise<Overview>;
  /** Stop taking work; resolves with the state after the change. */
  pause(): Promise<NodeStatus>;
  /** Stop taking work for `minutes`, then resume by itself. */
  pauseFor(minutes: number): Promise<NodeStatus>;
  /** Take work again; resolves with the state after the change. */
  resume(): Promise<NodeStatus>;
  /** Receive every node event from now on, in order. */
  subscribe(onEvent: (event: NodeEvent) => void): Promise<Unsubscribe>;
}
