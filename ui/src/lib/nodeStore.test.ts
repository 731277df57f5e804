import { describe, expect, it } from "vitest";
import type { Backend } from "./backend";
import type { JobSummary, NodeEvent, NodeStatus, Overview, Telemetry } from "./bindings";
import { HISTORY_LIMIT, JOBS_LIMIT, NodeStore } from "./nodeStore.svelte";

function job(id: string, started: number, state: JobSummary["state"], micro = 0): JobSummary {
  return {
    job_id: id,
    model: "all-minilm-l6-v2",
    task: "embeddings",
    state,
    started_unix_ms: started,
    ended_unix_ms: state === "running" ? null : started + 100,
    units: 10,
    micro_credits: micro,
    receipt_sequence: null,
    note: null,
  };
}

/** An in-memory backend that behaves like the Rust node: one state, events in order. */
class InMemoryBackend implements Backend {
  current: NodeStatus = { activity: { kind: "running" }, changed_at_ms: 0, revision: 0 };
  listeners: ((event: NodeEvent) => void)[] = [];
  failNext: string | null = null;

  jobs: JobSummary[] = [];
  /** Why the automatic pause is in force (set by a test), for "Resume anyway". */
  automatic: NodeStatus["activity"] | null = null;
  history: Telemetry[] = [];

  async status() {
    return this.current;
  }
  async overview(): Promise<Overview> {
    return {
      node_id: "n",
      device: "CPU (test)",
      status: this.current,
      pool: { url: "http://127.0.0.1:1", name: "Local demo pool", connected: true, demo: true, error: null, terms: null, notices: [], downloads: [], new_version: null, serving: [] },
      earnings: { today_micro_credits: 5, today_jobs: 1, today_failed: 0, last_hour_micro_credits: 5, lifetime_micro_credits: 5, today_energy_wh: 0.5, today_energy_estimated: true, pending_micro_credits: 0, payable_micro_credits: 0, demo: true },
      jobs: this.jobs,
      telemetry: null,
      changes: [],
    };
  }
  emit(event: NodeEvent) {
    for (const listener of this.listeners) listener(event);
  }
  async pause() {
    return this.change({ kind: "paused", reason: { kind: "user", source: "window", until_ms: null } });
  }
  async resume() {
    return this.change({ kind: "running" });
  }
  async pauseFor(minutes: number) {
    return this.change({
      kind: "paused",
      reason: { kind: "user", source: "window", until_ms: this.current.changed_at_ms + minutes * 60_000 },
    });
  }
  async resumeAnyway(seconds: number | null) {
    const paused = this.current.activity;
    if (paused.kind !== "paused" || paused.reason.kind === "user") throw "not paused: nothing to resume";
    const until = seconds === null ? null : this.current.changed_at_ms + seconds * 1000;
    this.current = {
      activity: { kind: "running" },
      changed_at_ms: this.current.changed_at_ms,
      revision: this.current.revision + 1,
      overriding: { reason: paused.reason, until_ms: until, source: "window" },
    };
    return this.current;
  }
  async endOverride() {
    const reason = this.current.overriding?.reason;
    return reason ? this.change({ kind: "paused", reason }) : this.current;
  }
  async telemetryHistory(minutes: number) {
    return this.history.filter((t) => t.at_unix_ms >= Date.now() - minutes * 60_000);
  }
  async subscribe(onEvent: (event: NodeEvent) => void) {
    this.listeners.push(onEvent);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== onEvent);
    };
  }
  // The pages' queries are not used by the store; these tests do not reach them.
  earningsReport(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  jobPage(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  settings(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  saveSettings(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  exportHistory(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  games(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  hardware(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  runBenchmark(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  logs(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  saveDiagnostics(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
  }
  openNewVersion(): Promise<never> {
    return Promise.reject(new Error("not used by the store"));
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
    backend.external({ kind: "paused", reason: { kind: "user", source: "tray", until_ms: null } });
    expect(store.status?.activity).toEqual({ kind: "paused", reason: { kind: "user", source: "tray", until_ms: null } });
  });

  it("stops following after unsubscribing", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    const unsubscribe = await store.connect();
    unsubscribe();
    backend.external({ kind: "paused", reason: { kind: "user", source: "tray", until_ms: null } });
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

  it("loads the overview and follows job and earnings events", async () => {
    const backend = new InMemoryBackend();
    backend.jobs = [job("old", 1000, "completed", 5)];
    const store = new NodeStore(backend);
    await store.connect();
    expect(store.pool?.name).toBe("Local demo pool");
    expect(store.earnings?.today_micro_credits).toBe(5);
    expect(store.jobs.map((j) => j.job_id)).toEqual(["old"]);

    backend.emit({ type: "job_started", job: job("new", 2000, "running") });
    expect(store.jobs.map((j) => [j.job_id, j.state])).toEqual([["new", "running"], ["old", "completed"]]);
    backend.emit({ type: "job_ended", job: job("new", 2000, "completed", 7) });
    expect(store.jobs).toHaveLength(2);
    expect(store.jobs[0].state).toBe("completed");
    expect(store.jobs[0].micro_credits).toBe(7);
    backend.emit({
      type: "earnings_changed",
      earnings: { today_micro_credits: 12, today_jobs: 2, today_failed: 0, last_hour_micro_credits: 12, lifetime_micro_credits: 12, today_energy_wh: 1, today_energy_estimated: true, pending_micro_credits: 0, payable_micro_credits: 0, demo: true },
    });
    expect(store.earnings?.today_jobs).toBe(2);
    backend.emit({ type: "pool_changed", pool: { url: "u", name: null, connected: false, demo: true, error: "gone", terms: null, notices: [], downloads: [], new_version: null, serving: [] } });
    expect(store.pool?.connected).toBe(false);
  });

  it("keeps the newest jobs only", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    await store.connect();
    for (let i = 0; i < JOBS_LIMIT + 10; i++) backend.emit({ type: "job_ended", job: job(`j${i}`, i, "completed") });
    expect(store.jobs).toHaveLength(JOBS_LIMIT);
    expect(store.jobs[0].job_id).toBe(`j${JOBS_LIMIT + 9}`);
  });

  it("pauses for a while through the backend", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    await store.connect();
    await store.pauseFor(30);
    const activity = store.status?.activity;
    expect(activity?.kind).toBe("paused");
    if (activity?.kind === "paused" && activity.reason.kind === "user") {
      expect(activity.reason.until_ms).toBe(30 * 60_000);
    }
  });

  it("resumes anyway through a game, shows what it overrides, and lets the game pause again", async () => {
    const backend = new InMemoryBackend();
    const store = new NodeStore(backend);
    await store.connect();
    backend.external({ kind: "paused", reason: { kind: "game", name: "Doom.exe" } });
    await store.resumeAnyway(null);
    expect(store.status?.activity.kind).toBe("running");
    expect(store.status?.overriding?.reason).toEqual({ kind: "game", name: "Doom.exe" });
    expect(store.status?.overriding?.until_ms).toBeNull();
    await store.endOverride();
    expect(store.status?.activity).toEqual({ kind: "paused", reason: { kind: "game", name: "Doom.exe" } });
    expect(store.status?.overriding).toBeUndefined();
  });

  it("keeps the last minutes of readings for sparklines", async () => {
    const backend = new InMemoryBackend();
    const now = Date.now();
    const reading = (at: number, cpu: number): Telemetry => ({
      at_unix_ms: at,
      cpu_percent: cpu,
      hearth_cpu_percent: cpu / 2,
      logical_cores: 4,
      ram_used_bytes: 1,
      ram_total_bytes: 2,
      hearth_ram_bytes: 1,
      cpu_power_w: 10,
      cpu_power_estimated: true,
      cpu_temperature_c: null,
      gpus: [],
    });
    backend.history = [reading(now - 10 * 60_000, 1), reading(now - 60_000, 2)];
    const store = new NodeStore(backend);
    await store.connect();
    expect(store.recent.map((t) => t.cpu_percent)).toEqual([2]);
    backend.emit({ type: "telemetry", telemetry: reading(now, 3) });
    backend.emit({ type: "telemetry", telemetry: reading(now + 5 * 60_000, 4) });
    // The reading five minutes before the newest is forgotten.
    expect(store.recent.map((t) => t.cpu_percent)).toEqual([4]);
    expect(store.telemetry?.cpu_percent).toBe(4);
  });
});
