// The one interface the UI talks to. `HttpBackend` implements it over the node's local API
// (in Hearth's window and in a browser alike); tests implement it in memory. Components never
// call a transport.

import type {
  EarningsReport,
  HardwareView,
  JobPage,
  JobQuery,
  NodeConfig,
  NodeEvent,
  NodeStatus,
  Overview,
} from "./bindings";

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
  /** Earnings over the last 30 days. */
  earningsReport(): Promise<EarningsReport>;
  /** One page of the job history. */
  jobPage(query: JobQuery): Promise<JobPage>;
  /** The settings as saved. */
  settings(): Promise<NodeConfig>;
  /** Check and save settings; rejects with "key: reason" when one is invalid. */
  saveSettings(settings: NodeConfig): Promise<NodeConfig>;
  /** Export every job as CSV; resolves with where it went. */
  exportHistory(): Promise<string>;
  /** The machine, its stored benchmark and expected earnings. */
  hardware(): Promise<HardwareView>;
  /** Run the capability benchmark (progress arrives as events). */
  runBenchmark(): Promise<HardwareView>;
  /** The newest log lines, oldest first. */
  logs(lines: number): Promise<string[]>;
  /** Save the diagnostics bundle (no keys); resolves with where it went. */
  saveDiagnostics(): Promise<string>;
}
