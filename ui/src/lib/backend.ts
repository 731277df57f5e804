// The one interface the UI talks to. `HttpBackend` implements it over the node's local API
// (in Hearth's window and in a browser alike); tests implement it in memory. Components never
// call a transport.

import type {
  EarningsReport,
  GamesView,
  HardwareView,
  JobPage,
  JobQuery,
  NodeConfig,
  NodeEvent,
  NodeStatus,
  Overview,
  Telemetry,
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
  /**
   * "Resume anyway" (or "Skip wait"): work through the automatic pause in force, until its
   * reason ends (`null`) or for `seconds`; rejects with the reason in words when refused.
   */
  resumeAnyway(seconds: number | null): Promise<NodeStatus>;
  /** Let the overridden automatic pause apply again. */
  endOverride(): Promise<NodeStatus>;
  /** The built-in game list with the owner's switches, their own games, games seen lately. */
  games(): Promise<GamesView>;
  /** Resource use over the last `minutes`, oldest first (at most 240 averaged points). */
  telemetryHistory(minutes: number): Promise<Telemetry[]>;
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
  /** Open the page of the new version the pool told of in the browser; resolves with its address. */
  openNewVersion(): Promise<string>;
}
