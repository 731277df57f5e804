// Generated from the Rust types in crates/hearth-node by `typescript_bindings()`.
// Do not edit: run `UPDATE_BINDINGS=1 cargo test -p hearth-node bindings`.

/**
 * Who asked the node to change its state. Shown to the user ("Paused from the tray").
 */
export type ControlSource = "window" | "tray" | "cli";

/**
 * Why the node is not taking work.
 */
export type PauseReason = { "kind": "user", 
/**
 * Where the owner clicked.
 */
source: ControlSource, 
/**
 * When the pause ends by itself (ms since the Unix epoch); `None`: until resumed.
 */
until_ms: number | null, } | { "kind": "game", 
/**
 * The game's program, e.g. "Cyberpunk2077.exe".
 */
name: string, } | { "kind": "gpu_process", name: string, } | { "kind": "fullscreen" } | { "kind": "temperature" } | { "kind": "vram_pressure" } | { "kind": "schedule" } | { "kind": "user_active" } | { "kind": "pool_down" } | { "kind": "cooling_down", 
/**
 * When work resumes, in milliseconds since the Unix epoch.
 */
until_ms: number, };

/**
 * Whether the node is lending its GPU right now.
 */
export type ActivityState = { "kind": "running" } | { "kind": "throttled", 
/**
 * The share of the time spent working, in percent (1..=99).
 */
duty_percent: number, } | { "kind": "paused", 
/**
 * Why.
 */
reason: PauseReason, };

/**
 * A snapshot of the node's state.
 */
export type NodeStatus = { 
/**
 * Running or paused, and why.
 */
activity: ActivityState, 
/**
 * When `activity` last changed, in milliseconds since the Unix epoch.
 */
changed_at_ms: number, 
/**
 * Grows by one with every change, so a frontend can drop a snapshot older than one it
 * already shows (an event and a query answer may arrive in either order).
 */
revision: number, };

/**
 * Where a job stands, as the ledger records it.
 */
export type JobState = "running" | "completed" | "failed" | "returned" | "interrupted";

/**
 * One job, for lists and notifications (the ledger's record without the receipt's bytes).
 */
export type JobSummary = { job_id: string, model: string, 
/**
 * `embeddings`, `chat`, `image_classification` or `chat_score`.
 */
task: string, state: JobState, started_unix_ms: number, ended_unix_ms: number | null, 
/**
 * Units billed (tokens or images).
 */
units: number, 
/**
 * Credits earned, in millionths of a credit.
 */
micro_credits: number, 
/**
 * Position of the pool's receipt in this node's chain, once paid.
 */
receipt_sequence: number | null, 
/**
 * Why it failed or was returned.
 */
note: string | null, };

/**
 * Earnings at a glance, from the ledger.
 */
export type Earnings = { 
/**
 * Credits earned since local midnight, in millionths.
 */
today_micro_credits: number, 
/**
 * Jobs completed since local midnight.
 */
today_jobs: number, 
/**
 * Jobs failed since local midnight.
 */
today_failed: number, 
/**
 * Credits earned over the last 60 minutes: the current rate per hour.
 */
last_hour_micro_credits: number, 
/**
 * True when the pool pays demo credits (the embedded local pool).
 */
demo: boolean, };

/**
 * The pool this node works for.
 */
export type PoolStatus = { url: string, 
/**
 * The pool's own name, once it answered.
 */
name: string | null, connected: boolean, 
/**
 * The local demo pool: its credits are not money.
 */
demo: boolean, 
/**
 * The last error talking to it, while disconnected.
 */
error: string | null, };

/**
 * One GPU's live readings.
 */
export type GpuLive = { name: string, utilisation_percent: number | null, vram_used_bytes: number | null, vram_total_bytes: number | null, temperature_c: number | null, power_w: number | null, };

/**
 * Live resource use, once a second.
 */
export type Telemetry = { at_unix_ms: number, 
/**
 * Whole machine, 0..=100.
 */
cpu_percent: number, ram_used_bytes: number, ram_total_bytes: number, 
/**
 * Hearth itself, in percent of one core.
 */
process_cpu_percent: number, gpus: Array<GpuLive>, };

/**
 * Everything the overview page needs, in one answer.
 */
export type Overview = { node_id: string, 
/**
 * The compute device jobs run on, in words.
 */
device: string, status: NodeStatus, pool: PoolStatus, earnings: Earnings, 
/**
 * Newest first.
 */
jobs: Array<JobSummary>, telemetry: Telemetry | null, 
/**
 * The newest state changes (pauses, resumes), newest first, kept across restarts.
 */
changes: Array<NodeStatus>, };

/**
 * Everything the node announces, in order, on its broadcast channel.
 */
export type NodeEvent = { "type": "status_changed", 
/**
 * The state after the change.
 */
status: NodeStatus, } | { "type": "job_started", job: JobSummary, } | { "type": "job_ended", job: JobSummary, } | { "type": "earnings_changed", earnings: Earnings, } | { "type": "pool_changed", pool: PoolStatus, } | { "type": "telemetry", telemetry: Telemetry, };
