// The window's view of the node: the latest status and what changed this session.
// Rust owns the state; this only mirrors it, keeping the newest snapshot by revision.

import type { Backend, Unsubscribe } from "./backend";
import type {
  Earnings,
  JobSummary,
  NodeConfig,
  NodeEvent,
  NodeStatus,
  PoolStatus,
  Telemetry,
} from "./bindings";
import { newer } from "./status";

/** How many past changes the window lists. */
export const HISTORY_LIMIT = 20;
/** How many jobs the overview lists. */
export const JOBS_LIMIT = 50;
/** How far back the overview's sparklines reach. */
export const RECENT_MINUTES = 5;

export class NodeStore {
  status = $state<NodeStatus | null>(null);
  /** Changes seen since the window opened, newest first. */
  history = $state<NodeStatus[]>([]);
  /** The last failed request, in words; cleared by the next success. */
  error = $state<string | null>(null);
  /** True while a pause or resume request is on its way. */
  busy = $state(false);
  /** Newest first, kept current by job events. */
  jobs = $state<JobSummary[]>([]);
  earnings = $state<Earnings | null>(null);
  /** The capability benchmark's progress while it runs (the Hardware page clears it). */
  benchmark = $state<{ fraction: number; message: string } | null>(null);
  pool = $state<PoolStatus | null>(null);
  telemetry = $state<Telemetry | null>(null);
  /** Resource use over the last {@link RECENT_MINUTES}, oldest first, for sparklines. */
  recent = $state<Telemetry[]>([]);
  /** The owner's settings (currency, credit value, electricity price), once read. */
  settings = $state<NodeConfig | null>(null);
  /** The compute device jobs run on, in words. */
  device = $state("");

  #backend: Backend;

  constructor(backend: Backend) {
    this.#backend = backend;
  }

  /** Subscribe first, then read, so no change can fall between the two. */
  async connect(): Promise<Unsubscribe> {
    const unsubscribe = await this.#backend.subscribe((event) => this.#onEvent(event));
    try {
      this.accept(await this.#backend.status());
      await this.refresh();
      await this.loadRecent();
      this.settings = await this.#backend.settings().catch(() => this.settings);
    } catch (err) {
      this.error = messageOf(err);
    }
    return unsubscribe;
  }

  /** Read the whole overview again (on connect, and while the node is starting). */
  async refresh(): Promise<void> {
    const overview = await this.#backend.overview();
    this.accept(overview.status);
    this.earnings = overview.earnings;
    this.pool = overview.pool;
    this.device = overview.device;
    this.telemetry = overview.telemetry ?? this.telemetry;
    // The ledger's record of earlier changes, until this window sees its own.
    if (this.history.length === 0) this.history = overview.changes.slice(0, HISTORY_LIMIT);
    // Events may have arrived while the answer was on its way: keep those entries.
    const seen = new Set(this.jobs.map((j) => j.job_id));
    this.jobs = [...this.jobs, ...overview.jobs.filter((j) => !seen.has(j.job_id))]
      .sort((a, b) => b.started_unix_ms - a.started_unix_ms)
      .slice(0, JOBS_LIMIT);
  }

  /** Read the last minutes of resource use (the sampler keeps them; events extend them). */
  async loadRecent(): Promise<void> {
    const earlier = await this.#backend.telemetryHistory(RECENT_MINUTES);
    const first = this.recent[0]?.at_unix_ms ?? Infinity;
    this.recent = [...earlier.filter((t) => t.at_unix_ms < first), ...this.recent];
  }

  /** Add one live reading, forgetting what is older than {@link RECENT_MINUTES}. */
  addReading(reading: Telemetry): void {
    this.telemetry = reading;
    const cutoff = reading.at_unix_ms - RECENT_MINUTES * 60_000;
    this.recent = [...this.recent.filter((t) => t.at_unix_ms > cutoff), reading];
  }

  /** "Resume anyway" / "Skip wait": work through the automatic pause. */
  async resumeAnyway(seconds: number | null): Promise<void> {
    await this.#request(() => this.#backend.resumeAnyway(seconds));
  }

  /** Let the automatic pause apply again. */
  async endOverride(): Promise<void> {
    await this.#request(() => this.#backend.endOverride());
  }

  async #request(ask: () => Promise<NodeStatus>): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      this.accept(await ask());
      this.error = null;
    } catch (err) {
      this.error = messageOf(err);
    } finally {
      this.busy = false;
    }
  }

  /** Put `job` in the list, replacing an older entry for the same job. */
  upsertJob(job: JobSummary): void {
    const rest = this.jobs.filter((j) => j.job_id !== job.job_id);
    this.jobs = [job, ...rest]
      .sort((a, b) => b.started_unix_ms - a.started_unix_ms)
      .slice(0, JOBS_LIMIT);
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

  /** Pause for `minutes`, then resume by itself. */
  async pauseFor(minutes: number): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      this.accept(await this.#backend.pauseFor(minutes));
      this.error = null;
    } catch (err) {
      this.error = messageOf(err);
    } finally {
      this.busy = false;
    }
  }

  /** Pause when running, resume when paused. */
  async toggle(): Promise<void> {
    if (this.status === null || this.busy) return;
    this.busy = true;
    try {
      const next =
        this.status.activity.kind !== "paused"
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
      case "job_started":
      case "job_ended":
        this.upsertJob(event.job);
        break;
      case "earnings_changed":
        this.earnings = event.earnings;
        break;
      case "pool_changed":
        this.pool = event.pool;
        break;
      case "telemetry":
        this.addReading(event.telemetry);
        break;
      case "settings_changed":
        this.settings = event.settings;
        break;
      case "benchmark_progress":
        this.benchmark = { fraction: event.fraction, message: event.message };
        break;
    }
  }
}

function messageOf(err: unknown): string {
  if (typeof err === "string") return err;
  if (err instanceof Error) return err.message;
  return JSON.stringify(err);
}
