// Backend over the node's local HTTP API: JSON for queries, server-sent events for changes.
// In a browser the token comes from the address the node printed (`/?token=…`) and is kept for
// the tab; in Hearth's window the shell hands over the address and token.

import type { Backend, Unsubscribe } from "./backend";
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

const TOKEN_KEY = "hearth-token";

/**
 * Where exports go: the browser's downloads, or (in Hearth's window, which has no download
 * manager) a file the node writes into the Downloads folder.
 */
export type ExportMode = "download" | "save-to-folder";

export class HttpBackend implements Backend {
  #base: string;
  #token: string;
  #exports: ExportMode;

  constructor(base: string, token: string, exports: ExportMode) {
    this.#base = base;
    this.#token = token;
    this.#exports = exports;
  }

  async #call<T>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.#token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(`${this.#base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 422 || response.status === 409) {
      // A setting or a request the node refused: its answer ("key: reason") is for the user.
      throw new Error(await response.text());
    }
    if (!response.ok) {
      throw new Error(`${path}: ${response.status} ${await response.text()}`);
    }
    return (await response.json()) as T;
  }

  status(): Promise<NodeStatus> {
    return this.#call("GET", "/api/status");
  }

  overview(): Promise<Overview> {
    return this.#call("GET", "/api/overview");
  }

  pause(): Promise<NodeStatus> {
    return this.#call("POST", "/api/pause?from=window");
  }

  pauseFor(minutes: number): Promise<NodeStatus> {
    return this.#call("POST", `/api/pause?minutes=${Math.round(minutes)}&from=window`);
  }

  resume(): Promise<NodeStatus> {
    return this.#call("POST", "/api/resume?from=window");
  }

  resumeAnyway(seconds: number | null): Promise<NodeStatus> {
    const length = seconds === null ? "" : `seconds=${Math.round(seconds)}&`;
    return this.#call("POST", `/api/resume-anyway?${length}from=window`);
  }

  endOverride(): Promise<NodeStatus> {
    return this.#call("DELETE", "/api/resume-anyway");
  }

  games(): Promise<GamesView> {
    return this.#call("GET", "/api/games");
  }

  telemetryHistory(minutes: number): Promise<Telemetry[]> {
    return this.#call("GET", `/api/telemetry?minutes=${Math.round(minutes)}`);
  }

  async subscribe(onEvent: (event: NodeEvent) => void): Promise<Unsubscribe> {
    const source = new EventSource(
      `${this.#base}/api/events?token=${encodeURIComponent(this.#token)}`,
    );
    source.onmessage = (message) => onEvent(JSON.parse(message.data) as NodeEvent);
    return () => source.close();
  }

  earningsReport(): Promise<EarningsReport> {
    return this.#call("GET", "/api/earnings/report");
  }

  jobPage(query: JobQuery): Promise<JobPage> {
    return this.#call("POST", "/api/jobs/page", query);
  }

  settings(): Promise<NodeConfig> {
    return this.#call("GET", "/api/settings");
  }

  saveSettings(settings: NodeConfig): Promise<NodeConfig> {
    return this.#call("PUT", "/api/settings", settings);
  }

  hardware(): Promise<HardwareView> {
    return this.#call("GET", "/api/hardware");
  }

  runBenchmark(): Promise<HardwareView> {
    return this.#call("POST", "/api/hardware/benchmark");
  }

  logs(lines: number): Promise<string[]> {
    return this.#call("GET", `/api/logs?lines=${Math.round(lines)}`);
  }

  exportHistory(): Promise<string> {
    return this.#exports === "save-to-folder"
      ? this.#call("POST", "/api/ledger/export/save")
      : this.#download("/api/ledger/export", "hearth-jobs.csv");
  }

  saveDiagnostics(): Promise<string> {
    return this.#exports === "save-to-folder"
      ? this.#call("POST", "/api/diagnostics/save")
      : this.#download("/api/diagnostics", "hearth-diagnostics.txt");
  }

  openNewVersion(): Promise<string> {
    return this.#call("POST", "/api/new-version/open");
  }

  async #download(path: string, name: string): Promise<string> {
    const response = await fetch(`${this.#base}${path}`, {
      headers: { Authorization: `Bearer ${this.#token}` },
    });
    if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = name;
    link.click();
    URL.revokeObjectURL(link.href);
    return `your browser's downloads (${name})`;
  }
}

/** The token from `?token=` (remembered for the tab, and taken out of the address bar). */
export function tokenFromPage(location: Location, storage: Storage): string | null {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    storage.setItem(TOKEN_KEY, fromUrl);
    window.history.replaceState(null, "", location.pathname);
    return fromUrl;
  }
  return storage.getItem(TOKEN_KEY);
}
