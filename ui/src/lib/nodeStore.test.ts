import { describe, expect, it } from "vitest";
import type { Backend } from "./backend";
import type { NodeEvent, NodeStatus } from "./bindings";
import { HISTORY_LIMIT, NodeStore } from "./nodeStore.svelte";

/** An in-memory backend that behaves like the Rust node: one state, events in order. */
class InMemoryBackend implements Backend {
  current: NodeStatus = { activity: { kind: "running" }, changed_at_ms: 0, revision: 0 };
  listeners: ((event: NodeEvent) => void)[] = [];
  failNext: string | null = null;

  async status() {
    return this.current;
  }
  async pause() {
    return this.change({ kind: "paused", reason: { kind: "user", source: "window" } });
  }
  async resume() {
    return this.change({ kind: "running" });
  }
  async subscribe(onEvent: (event: NodeEvent) => void) {
    this.listeners.push(onEvent);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== onEvent);
    };
  }
  /** A change made elsewhere, e.g. from the tray. */
  external(activity: NodeStatus["activity"]) {
    this.change(activity);
  }
  private change(activity: NodeStatus["activity"]): NodeStatus {
    if (this.failNext) {
      const message = this.failNext;
      this.failNext = null;
      throw message;
    }
    this.current = { activity, changed_at_ms: this.current.changed_at_ms + 1000, revision: this.current.revision + 1 };
    for (const listener of this.listeners) listener({ type: "status_changed", status: this.current });
    return this.current;
  }
}

describe("NodeStore", () => {
  it("shows the node's state after connecting", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    await store.connect();
    expect(store.status?.activity.kind).toBe("running");
    expect(store.history).toHaveLength(0);
  });

  it("toggles through the backend and records the change", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    await store.connect();
    await store.toggle();
    expect(store.status?.activity.kind).toBe("paused");
    expect(store.history.map((s) => s.revision)).toEqual([1]);
    await store.toggle();
    expect(store.status?.activity.kind).toBe("running");
    expect(store.history.map((s) => s.revision)).toEqual([2, 1]);
  });

  it("follows changes pushed from elsewhere", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    await store.connect();
    backend.external({ kind: "paused", reason: { kind: "user", source: "tray" } });
    expect(store.status?.activity).toEqual({ kind: "paused", reason: { kind: "user", source: "tray" } });
  });

  it("stops following after unsubscribing", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    const unsubscribe = await store.connect();
    unsubscribe();
    backend.external({ kind: "paused", reason: { kind: "user", source: "tray" } });
    expect(store.status?.activity.kind).toBe("running");
  });

  it("shows an error and keeps the state when a request fails", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    await store.connect();
    backend.failNext = "node unreachable";
    await store.toggle();
    expect(store.error).toBe("node unreachable");
    expect(store.status?.activity.kind).toBe("running");
    expect(store.busy).toBe(false);
    await store.toggle();
    expect(store.error).toBeNull();
  });

  it("keeps a bounded history", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    await store.connect();
    for (let i = 0; i < HISTORY_LIMIT + 5; i++) await store.toggle();
    expect(store.history).toHaveLength(HISTORY_LIMIT);
    expect(store.history[0].revision).toBe(HISTORY_LIMIT + 5);
  });
});
