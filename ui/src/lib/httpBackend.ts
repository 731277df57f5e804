// Backend over the headless node's HTTP API: JSON for queries, server-sent events for changes.
// The token comes from the address the node printed (`/?token=…`) and is kept for the tab.

import type { Backend, Unsubscribe } from "./backend";
import type { NodeEvent, NodeStatus, Overview } from "./bindings";

const TOKEN_KEY = "hearth-token";

export class HttpBackend implements Backend {
  #base: string;
  #token: string;

  constructor(base: string, token: string) {
    this.#base = base;
    this.#token = token;
  }

  async #call<T>(method: "GET" | "POST", path: string): Promise<T> {
    const response = await fetch(`${this.#base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.#token}` },
    });
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
    return this.#call("POST", "/api/pause");
  }

  pauseFor(minutes: number): Promise<NodeStatus> {
    return this.#call("POST", `/api/pause?minutes=${Math.round(minutes)}`);
  }

  resume(): Promise<NodeStatus> {
    return this.#call("POST", "/api/resume");
  }

  async subscribe(onEvent: (event: NodeEvent) => void): Promise<Unsubscribe> {
    const source = new EventSource(
      `${this.#base}/api/events?token=${encodeURIComponent(this.#token)}`,
    );
    source.onmessage = (message) => onEvent(JSON.parse(message.data) as NodeEvent);
    return () => source.close();
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
