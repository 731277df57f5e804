// The window's view of the node: the latest status and what changed this session.
// Rust owns the state; this only mirrors it, keeping the newest snapshot by revision.

import type { Backend, Unsubscribe } from "./backend";
import type { NodeEvent, NodeStatus } from "./bindings";
import { newer } from "./status";

/** How many past changes the window lists. */
export const HISTORY_LIMIT = 20;

export class NodeStore {
  status = $state<NodeStatus | null>(null);
  /** Changes seen since the window opened, newest first. */
  history = $state<NodeStatus[]>([]);
  /** The last failed request, in words; cleared by the next success. */
  error = $state<string | null>(null);
  /** True while a pause or resume request is on its way. */
  busy = $state(false);

  #backend: Backend;

  constructor(backend: Backend) {
    this.#backend = backend;
  }

  /** Subscribe first, then read, so no change can fall between the two. */
  async connect(): Promise<Unsubscribe> {
    const unsubscribe = await this.#backend.subscribe((event) => this.#onEvent(event));
    try {
      this.accept(await this.#backend.status());
    } catch (err) {
      this.error = messageOf(err);
    }
    return unsubscribe;
  }

  /** Show `incoming` unless a newer snapshot is already shown. */
  accept(incoming: NodeStatus): void {
    const before = this.status;
    const after = newer(before, incoming);
    if (after === before) return;
    this.status = after;
    if (before !== null) {
      this.history = [after, ...this.history].slice(0, HISTORY_LIMIT);
    }
  }

  /** Pause when running, resume when paused. */
  async toggle(): Promise<void> {
    if (this.status === null || this.busy) return;
    this.busy = true;
    try {
      const next =
        this.status.activity.kind === "running"
          ? await this.#backend.pause()
          : await this.#backend.resume();
      this.accept(next);
      this.error = null;
    } catch (err) {
      this.error = messageOf(err);
    } finally {
      this.busy = false;
    }
  }

  #onEvent(event: NodeEvent): void {
    switch (event.type) {
      case "status_changed":
        this.accept(event.status);
        break;
    }
  }
}

function messageOf(err: unknown): string {
  if (typeof err === "string") return err;
  if (err instanceof Error) return err.message;
  return JSON.stringify(err);
}
