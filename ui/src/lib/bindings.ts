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
name: string, } | { "kind": "gpu_process", name: string, } | { "kind": "fullscreen" } | { "kind": "temperature" } | { "kind": "vram_pressure" } | { "kind": "schedule" } | { "kind": "user_active" } | { "kind": "on_battery" } | { "kind": "disk_full", 
/**
 * Free space still wanted (Hearth's headroom less what is free); 0 when the disk
 * shows room but refuses anyway (a quota).
 */
needed_bytes: number, } | { "kind": "storage_failing", 
/**
 * What is wrong, in words.
 */
error: string, } | { "kind": "cooling_down", 
/**
 * When work resumes, in milliseconds since the Unix epoch.
 */
until_ms: number, };

/**
 * The owner's "Resume anyway" (or "Skip wait"): Hearth works although `reason` would pause
 * it, until that reason ends or until `until_ms`.
 */
export type PauseOverride = { 
/**
 * The automatic pause being worked through.
 */
reason: PauseReason, 
/**
 * When the override ends by itself (ms since the Unix epoch); `None`: when its reason
 * ends (the game closes, the wait is over).
 */
until_ms: number | null, 
/**
 * Where the owner asked.
 */
source: ControlSource, };

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
revision: number, 
/**
 * The owner's "Resume anyway" in force: an automatic pause they chose to work through.
 */
overriding?: PauseOverride, };

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
 * Credits earned since this node's first job (every receipt in the ledger).
 */
lifetime_micro_credits: number, 
/**
 * Energy Hearth's jobs used since local midnight (GPU and its share of the processor).
 */
today_energy_wh: number, 
/**
 * Some of `today_energy_wh` was estimated rather than measured.
 */
today_energy_estimated: boolean, 
/**
 * Credits whose receipts are younger than the pool's settlement time: not payable yet
 * (counted by the hour, so within an hour of exact). All are pending while the pool's
 * terms are unknown.
 */
pending_micro_credits: number, 
/**
 * Credits past the settlement time: payable to the payout address.
 */
payable_micro_credits: number, 
/**
 * True when the pool pays demo credits (the embedded local pool).
 */
demo: boolean, };

/**
 * The pool's payout terms, as it told them when the node joined.
 */
export type PoolTerms = { 
/**
 * One credit in `currency`, at the pool's rate.
 */
credit_value: number, currency: string, 
/**
 * How long after a receipt its credits become payable.
 */
settlement_ms: number, };

/**
 * A model being fetched from the pool.
 */
export type ModelDownload = { model: string, 
/**
 * Bytes of its files on disk (what an earlier attempt kept included).
 */
done_bytes: number, total_bytes: number, 
/**
 * Bytes received per second in this attempt.
 */
bytes_per_second: number, 
/**
 * Why the last attempt stopped, while it waits to go on.
 */
error: string | null, };

/**
 * A newer release of Hearth, which the owner may install (Hearth never installs it itself).
 */
export type NewVersion = { 
/**
 * E.g. `0.2.0`.
 */
version: string, 
/**
 * Where to get it (always https).
 */
url: string, 
/**
 * The first line of its release notes.
 */
headline: string, };

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
error: string | null, 
/**
 * What the pool pays, once it said (older pools do not).
 */
terms: PoolTerms | null, 
/**
 * What keeps work from running as it should, in words: a model whose files were damaged
 * being fetched again, jobs failing in a row. Empty when nothing does.
 */
notices: Array<string>, 
/**
 * Models being fetched from the pool (ones it sells that this computer lacks).
 */
downloads: Array<ModelDownload>, 
/**
 * A newer Hearth than this one, as the pool told when the node joined.
 */
new_version: NewVersion | null, 
/**
 * The models this node offers the pool now (once joined): empty while the first ones are
 * still being fetched.
 */
serving: Array<string>, };

/**
 * One GPU's live readings; `None` where the board does not report a figure.
 */
export type GpuLive = { 
/**
 * Stable within this machine: `nvml:0`, `drm:card1`.
 */
id: string, name: string, 
/**
 * Where the figures come from, in words: "NVIDIA driver (NVML)", "Linux amdgpu driver".
 */
source: string, utilisation_percent: number | null, vram_used_bytes: number | null, vram_total_bytes: number | null, 
/**
 * What Hearth's loaded models hold of `vram_used_bytes` (on the GPU they run on).
 */
hearth_vram_bytes: number | null, temperature_c: number | null, 
/**
 * Measured board power; `None` without a sensor.
 */
power_w: number | null, fan_percent: number | null, 
/**
 * Energy over the last interval is an estimate (no power sensor).
 */
energy_estimated: boolean, };

/**
 * Live resource use, once a second.
 */
export type Telemetry = { at_unix_ms: number, 
/**
 * Whole machine, 0..=100.
 */
cpu_percent: number, 
/**
 * Hearth itself, in percent of the whole machine (0..=100).
 */
hearth_cpu_percent: number, 
/**
 * Logical cores (threads).
 */
logical_cores: number, ram_used_bytes: number, ram_total_bytes: number, 
/**
 * Hearth's own memory (resident set), part of `ram_used_bytes`.
 */
hearth_ram_bytes: number, 
/**
 * The processor's package power.
 */
cpu_power_w: number, 
/**
 * True when `cpu_power_w` is CPU use × the processor's rated power, not measured.
 */
cpu_power_estimated: boolean, cpu_temperature_c: number | null, gpus: Array<GpuLive>, };

/**
 * Everything the overview page needs, in one answer.
 */
export type Overview = { node_id: string, 
/**
 * Where jobs run, in plain words: the graphics card's name, or "your processor".
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
status: NodeStatus, } | { "type": "job_started", job: JobSummary, } | { "type": "job_ended", job: JobSummary, } | { "type": "earnings_changed", earnings: Earnings, } | { "type": "pool_changed", pool: PoolStatus, } | { "type": "telemetry", telemetry: Telemetry, } | { "type": "benchmark_progress", fraction: number, message: string, } | { "type": "settings_changed", settings: NodeConfig, };

/**
 * One hour's totals, for the charts.
 */
export type HourEarnings = { 
/**
 * Start of the hour, ms since the Unix epoch.
 */
at_ms: number, micro_credits: number, jobs_completed: number, jobs_failed: number, 
/**
 * GPU energy spent on jobs (Wh).
 */
energy_wh: number, 
/**
 * Some of the energy was estimated (no power sensor), not measured.
 */
energy_estimated: boolean, };

/**
 * Totals over the last `days`, with electricity and what is left after it.
 */
export type PeriodEarnings = { days: number, micro_credits: number, jobs_completed: number, energy_wh: number, energy_estimated: boolean, 
/**
 * Earnings in the owner's currency (credits × the value of one credit).
 */
value: number, 
/**
 * Electricity for the jobs, in the owner's currency.
 */
electricity_cost: number, 
/**
 * `value − electricity_cost`.
 */
net: number, };

/**
 * One model's share of the earnings.
 */
export type ModelEarnings = { model: string, jobs: number, micro_credits: number, };

/**
 * Everything the Earnings page shows.
 */
export type EarningsReport = { 
/**
 * Every hour of the last 30 days that had work, oldest first.
 */
hours: Array<HourEarnings>, 
/**
 * The last 1, 7 and 30 days.
 */
periods: Array<PeriodEarnings>, 
/**
 * Completed jobs of the last 30 days by model, most credits first.
 */
by_model: Array<ModelEarnings>, 
/**
 * The owner's electricity price per kWh and currency (from the settings).
 */
price_per_kwh: number, currency: string, 
/**
 * What one credit is worth in `currency` (from the settings).
 */
credit_value: number, 
/**
 * Credits from the local demo pool are not money.
 */
demo: boolean, now_ms: number, };

/**
 * Which jobs the History page asks for.
 */
export type JobQuery = { 
/**
 * Rows to skip, newest first.
 */
offset: number, 
/**
 * Rows wanted (at most [`JobQuery::MAX_LIMIT`]).
 */
limit: number, state: JobState | null, model: string | null, 
/**
 * Jobs whose id starts with this (the search box).
 */
id_prefix: string | null, 
/**
 * Jobs started in `[from_ms, to_ms)`.
 */
from_ms: number | null, to_ms: number | null, };

/**
 * One page of the history.
 */
export type JobPage = { 
/**
 * Jobs matching the query in all.
 */
total: number, offset: number, jobs: Array<JobSummary>, };

/**
 * The node's settings. The window's Settings page edits them too (TypeScript generated).
 */
export type NodeConfig = { 
/**
 * `embedded` (the local demo pool, started in-process) or a pool's `http(s)://` URL.
 */
pool: string, 
/**
 * `auto` (a real GPU if there is one, else the CPU), `cpu` or `wgpu`.
 */
backend: string, 
/**
 * Jobs run at once.
 */
concurrency: number, 
/**
 * The embedded pool's demo customer sends a request this often (0: never).
 */
demo_interval_ms: number, 
/**
 * Port of the headless server on 127.0.0.1 (0: any free port).
 */
api_port: number, 
/**
 * Memory loaded models may hold (GPU memory on wgpu, RAM on the CPU), in MiB; the least
 * recently used model is unloaded to make room.
 */
model_memory_mib: number, 
/**
 * Disk the models' files may take, in MiB: a model the pool sells that would not fit is
 * not fetched.
 */
model_disk_mib: number, 
/**
 * Pause by itself while a game runs.
 */
detect_games: boolean, 
/**
 * Pause by itself while a fullscreen window is in front.
 */
detect_fullscreen: boolean, 
/**
 * Pause by itself while a laptop runs on its battery.
 */
pause_on_battery: boolean, 
/**
 * Work only while the owner is away (no keyboard or mouse input for `away_after_s`).
 */
idle_only: boolean, 
/**
 * Seconds without input after which the owner counts as away.
 */
away_after_s: number, 
/**
 * While the owner is at the computer (input within `away_after_s`) and not gaming, work
 * only this share of the time, in percent, so the desktop stays smooth (100: no throttle).
 */
throttle_when_active_percent: number, 
/**
 * Pause while another program keeps the GPU busy (DRM fdinfo; NVML compute processes).
 */
detect_gpu_processes: boolean, 
/**
 * Pause when other programs leave less GPU memory free than this (MiB) beyond what
 * Hearth's own models hold; resume once twice this is free (0: no VRAM limit).
 */
vram_min_free_mib: number, 
/**
 * The owner's own games: program names, or folders (with a `/`).
 */
games: Array<string>, 
/**
 * Entries of the built-in game list (a launcher's folder or a program name) the owner
 * turned off.
 */
games_off: Array<string>, 
/**
 * After the last game ends, wait this long before working again.
 */
game_cooldown_s: number, 
/**
 * After this long paused, loaded models are unloaded to give their memory back.
 */
free_memory_after_s: number, 
/**
 * How often the watcher looks for games, in ms.
 */
watch_interval_ms: number, 
/**
 * Pause at or above this GPU temperature (°C)…
 */
temperature_stop_c: number, 
/**
 * …and resume at or below this one.
 */
temperature_resume_c: number, 
/**
 * When Hearth may work, e.g. `["mon-fri 18:00-08:00", "weekends 00:00-24:00"]`
 * (local time); empty: any time. See [`crate::pause::schedule`].
 */
schedule: Array<string>, 
/**
 * Where the pool pays out (its own format, e.g. a wallet address); empty: not set.
 */
payout_address: string, 
/**
 * Electricity price per kWh in `currency`, for earnings net of electricity.
 */
electricity_price_per_kwh: number, 
/**
 * The processor's rated power (TDP) in watts: where no sensor measures its power, its
 * energy is estimated as this × its use.
 */
cpu_watts: number, 
/**
 * Three-letter currency code, e.g. `EUR`.
 */
currency: string, 
/**
 * What one credit pays out in `currency`.
 */
credit_value: number, 
/**
 * The window's first-run guide has been completed (it shows until then).
 */
first_run_done: boolean, 
/**
 * Start the desktop app when the owner logs in.
 */
start_at_login: boolean, 
/**
 * Tell the owner (a desktop notification) when Hearth pauses or resumes by itself.
 */
notify_on_auto_pause: boolean, 
/**
 * A PEM file of certificates to trust for an HTTPS pool beside the system's roots (a
 * private pool with its own CA).
 */
pool_ca_file?: string, 
/**
 * The pool's public key (base64) as its operator publishes it. Without it the key the
 * pool first answers with is pinned, and a pool answering with another is refused.
 */
pool_key?: string, };

/**
 * One GPU as the Hardware page lists it.
 */
export type GpuView = { name: string, 
/**
 * `nvidia`, `amd`, `intel`, `apple`, `mesa` or `other`.
 */
vendor: string, 
/**
 * `discrete`, `integrated`, `virtual`, `software` or `other`.
 */
kind: string, 
/**
 * Graphics APIs it is reachable through, best first.
 */
apis: Array<string>, driver: string, driver_version: string | null, vram_total_bytes: number | null, };

/**
 * One backend's benchmark figures.
 */
export type BackendView = { 
/**
 * `cpu` or `wgpu`.
 */
backend: string, device: string, matmul_gflops: number, bandwidth_gb_per_s: number, memory_bytes: number | null, };

/**
 * Whether a model fits each backend's memory.
 */
export type ModelFitView = { model: string, needs_bytes: number, fits: Array<string>, };

/**
 * The capability benchmark's result for this hardware.
 */
export type BenchmarkView = { 
/**
 * When it was measured (seconds since the Unix epoch).
 */
measured_at_unix: number, seconds: number, backends: Array<BackendView>, models: Array<ModelFitView>, };

/**
 * What this machine earns per hour of work, from the jobs it ran.
 */
export type ExpectedEarnings = { 
/**
 * Credits (millionths) per hour spent computing, over `jobs` recent completed jobs.
 */
micro_credits_per_busy_hour: number, jobs: number, 
/**
 * Time those jobs computed, in seconds.
 */
busy_s: number, };

/**
 * Everything the Hardware page shows.
 */
export type HardwareView = { 
/**
 * Where Hearth works, in plain words: "NVIDIA GeForce RTX 3060, 12 GB: Hearth runs on
 * it" or "No supported GPU found: Hearth uses your processor (slower, earns less)".
 */
summary: string, 
/**
 * True when Hearth's models run on a graphics card.
 */
runs_on_gpu: boolean, gpus: Array<GpuView>, cpu_model: string, cpu_threads: number, memory_total_bytes: number | null, 
/**
 * Whether NVML answered, or why not.
 */
nvml: string, 
/**
 * Where Hearth runs its models now, e.g. "cpu" or "wgpu (…)".
 */
compute_device: string, 
/**
 * The stored benchmark for this hardware, if it has been run.
 */
benchmark: BenchmarkView | null, 
/**
 * From the jobs run so far (none yet: `None`).
 */
expected: ExpectedEarnings | null, };

/**
 * One entry of the built-in game list, with the owner's switch.
 */
export type GameEntryView = { 
/**
 * The entry as the list and the setting `games_off` spell it (a folder or a name).
 */
entry: string, 
/**
 * In words: "Steam games (native and Proton)", or the program's name.
 */
label: string, enabled: boolean, };

/**
 * A game that paused Hearth lately.
 */
export type SeenGame = { name: string, 
/**
 * When it last paused Hearth (ms since the Unix epoch).
 */
paused_at_ms: number, };

/**
 * What the Settings page shows about games.
 */
export type GamesView = { 
/**
 * Game library folders of launchers (Steam, Epic, GOG, …).
 */
launchers: Array<GameEntryView>, 
/**
 * Games known by their program's name.
 */
names: Array<GameEntryView>, 
/**
 * The owner's own entries.
 */
yours: Array<string>, 
/**
 * Games that paused Hearth lately, newest first (at most 10).
 */
recent: Array<SeenGame>, };

/** How the node's state reads (from Rust's `PAUSE_WORDING`); `{name}`-style placeholders. */
export const PAUSE_WORDING: Readonly<Record<string, string>> = {
  "running": "running",
  "throttled": "working {percent}% of the time while you use the computer",
  "user": "paused from {place}",
  "user_until": "paused from {place} until {until}",
  "game": "{name} is running",
  "gpu_process": "{name} is using the GPU",
  "fullscreen": "a fullscreen window is open",
  "temperature": "the GPU is too hot",
  "vram_pressure": "GPU memory is short",
  "schedule": "outside your schedule",
  "user_active": "you are at the computer",
  "on_battery": "the computer is running on battery",
  "cooling_down": "your game ended; resuming {when}",
  "disk_full": "the disk is full: {needed} more free space is needed; Hearth resumes by itself",
  "disk_full_unsized": "the disk is full; Hearth resumes by itself once it can save again",
  "storage_failing": "Hearth cannot save its data: {error}; it resumes by itself once it can",
  "place.window": "the window",
  "place.tray": "the tray",
  "place.cli": "the command line",
  "override.game": "working while {name} runs",
  "override.gpu_process": "working while {name} uses the GPU",
  "override.fullscreen": "working behind the fullscreen window",
  "override.schedule": "working outside your schedule",
  "override.on_battery": "working on battery",
  "override.user_active": "working while you are at the computer",
  "override.cooling_down": "you skipped the wait after your game",
  "override.until": "{what}, until {until}",
  "override.until_it_ends": "{what}, until it ends",
};

/** The pauses the owner may work through (from Rust's `OVERRIDABLE`). */
export const OVERRIDABLE: readonly string[] = ["game","gpu_process","fullscreen","schedule","user_active","on_battery","cooling_down"];
