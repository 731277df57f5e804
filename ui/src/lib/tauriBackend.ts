// Backend over Tauri IPC: commands for queries, one event stream for changes.

import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { Backend, Unsubscribe } from "./backend";
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

  earningsReport(): Promise<EarningsReport> {
    return invoke<EarningsReport>("earnings_report");
  }

  jobPage(query: JobQuery): Promise<JobPage> {
    return invoke<JobPage>("job_page", { query });
  }

  settings(): Promise<NodeConfig> {
    return invoke<NodeConfig>("settings");
  }

  saveSettings(settings: NodeConfig): Promise<NodeConfig> {
    return invoke<NodeConfig>("save_settings", { settings });
  }

  exportHistory(): Promise<string> {
    return invoke<string>("export_history");
  }

  hardware(): Promise<HardwareView> {
    return invoke<HardwareView>("hardware");
  }

  runBenchmark(): Promise<HardwareView> {
    return invoke<HardwareView>("run_benchmark");
  }

  logs(lines: number): Promise<string[]> {
    return invoke<string[]>("recent_logs", { lines });
  }

  saveDiagnostics(): Promise<string> {
    return invoke<string>("save_diagnostics");
  }
}

/** True when the page runs inside the Tauri window. */
export function insideTauri(): boolean {
  return typeof window !== "undefined" && "__TAURI_INTERNALS__" in window;
}
