// Pure helpers that turn node status into what the user reads.

import {
  OVERRIDABLE,
  PAUSE_WORDING,
  type ControlSource,
  type NodeStatus,
  type PauseOverride,
  type PauseReason,
  type PoolStatus,
} from "./bindings";

/** Keep the newer of two snapshots; events and query answers may arrive in either order. */
export function newer(current: NodeStatus | null, incoming: NodeStatus): NodeStatus {
  if (current === null || incoming.revision > current.revision) return incoming;
  return current;
}

/** The wording for `key` (written once in Rust), its `{placeholders}` filled from `values`. */
export function worded(key: string, values: Record<string, string> = {}): string {
  const template = PAUSE_WORDING[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => values[name] ?? whole);
}

/** "14:30" in the user's locale. */
function clock(unixMs: number): string {
  return new Date(unixMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function place(source: ControlSource): string {
  return worded(`place.${source}`);
}

function capitalised(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** "Paused from the tray", "Paused: Cyberpunk2077.exe is running", etc. */
export function describeReason(reason: PauseReason, now: number = Date.now()): string {
  switch (reason.kind) {
    case "user":
      return capitalised(
        reason.until_ms === null
          ? worded("user", { place: place(reason.source) })
          : worded("user_until", { place: place(reason.source), until: clock(reason.until_ms) }),
      );
    case "game":
    case "gpu_process":
      return `Paused: ${worded(reason.kind, { name: reason.name })}`;
    case "cooling_down": {
      // A countdown here, where Rust's frontends (tray, CLI) give the clock time.
      const seconds = Math.max(0, Math.ceil((reason.until_ms - now) / 1000));
      const when = `in ${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
      return capitalised(worded("cooling_down", { when }));
    }
    case "user_active":
      return `Paused while ${worded(reason.kind)}`;
    case "disk_full":
      return reason.needed_bytes === 0
        ? `Paused: ${worded("disk_full_unsized")}`
        : `Paused: ${worded(reason.kind, { needed: `${Math.ceil(reason.needed_bytes / 1_000_000)} MB` })}`;
    case "storage_failing":
      return `Paused: ${worded(reason.kind, { error: reason.error })}`;
    default:
      return `Paused: ${worded(reason.kind)}`;
  }
}


/** What the owner can do about an automatic pause: the button's words and what it does. */
export type OverrideOffer = { label: string; explains: string; timed: boolean };

/** "Resume anyway" / "Skip wait" for an automatic pause the owner may override; else null. */
export function overrideOffer(status: NodeStatus | null): OverrideOffer | null {
  if (status?.activity.kind !== "paused") return null;
  const reason = status.activity.reason;
  if (!OVERRIDABLE.includes(reason.kind)) return null;
  switch (reason.kind) {
    case "cooling_down":
      return { label: "Skip wait", explains: "Start working now instead of waiting.", timed: false };
    case "game":
      return {
        label: "Resume anyway",
        explains: `Work while ${reason.name} runs, until it closes. Your game may run slower.`,
        timed: true,
      };
    case "gpu_process":
      return {
        label: "Resume anyway",
        explains: `Work while ${reason.name} uses the GPU, until it stops.`,
        timed: true,
      };
    case "fullscreen":
      return { label: "Resume anyway", explains: "Work behind the fullscreen window, until it closes.", timed: true };
    case "schedule":
      return { label: "Resume anyway", explains: "Work outside your schedule, until it allows work again.", timed: true };
    case "user_active":
      return { label: "Resume anyway", explains: "Work while you are at the computer.", timed: true };
    default:
      return { label: "Resume anyway", explains: "Work through this pause until it ends.", timed: true };
  }
}

/** "Working while Doom.exe runs, until it ends — you chose Resume anyway." */
export function describeOverride(o: PauseOverride): string {
  const name = o.reason.kind === "game" || o.reason.kind === "gpu_process" ? o.reason.name : "";
  const what = worded(`override.${o.reason.kind}`, { name });
  if (o.reason.kind === "cooling_down") return `${capitalised(what)}.`;
  const lasting =
    o.until_ms === null
      ? worded("override.until_it_ends", { what })
      : worded("override.until", { what, until: clock(o.until_ms) });
  return `${capitalised(lasting)} — you chose Resume anyway.`;
}

/** True when the node paused by itself (it resumes by itself too). */
export function pausedAutomatically(status: NodeStatus | null): boolean {
  return status?.activity.kind === "paused" && status.activity.reason.kind !== "user";
}

/** Why the owner cannot lift an automatic pause, and that it ends by itself. */
export function automaticPauseExplains(status: NodeStatus): string {
  const kind = status.activity.kind === "paused" ? status.activity.reason.kind : "";
  if (kind === "disk_full" || kind === "storage_failing")
    return "Hearth takes no work it could not record; it checks the disk again by itself and resumes as soon as it can save.";
  return "This pause protects your computer; Hearth resumes by itself when it ends.";
}

/** Joined, but with no model to run while the first ones arrive from the pool. */
export function waitingForModels(pool: PoolStatus | null): boolean {
  return !!pool?.connected && pool.serving.length === 0 && pool.downloads.length > 0;
}

/** The headline word for a status. */
export function headline(status: NodeStatus): "Running" | "Throttled" | "Paused" {
  switch (status.activity.kind) {
    case "running":
      return "Running";
    case "throttled":
      return "Throttled";
    case "paused":
      return "Paused";
  }
}

/**
 * One line under the headline. `waitingForModels`: the node has joined but has no model to run
 * yet (its first ones are still arriving from the pool).
 */
export function detail(status: NodeStatus, now: number = Date.now(), waitingForModels = false): string {
  const activity = status.activity;
  if (status.overriding) return describeOverride(status.overriding);
  if (activity.kind === "running" && waitingForModels)
    return "Hearth is fetching the models it runs from the pool; work starts once they are here.";
  if (activity.kind === "running") return "Hearth is taking work from the pool.";
  if (activity.kind === "throttled")
    return `${capitalised(worded("throttled", { percent: String(activity.duty_percent) }))}, so it stays smooth.`;
  if (activity.reason.kind === "cooling_down") return `${describeReason(activity.reason, now)}.`;
  return `${describeReason(activity.reason, now)}. No new work will start.`;
}

/** The time of the last change, e.g. "14:05", in the given or the user's locale. */
export function since(status: NodeStatus, locale?: string): string {
  const at = new Date(status.changed_at_ms);
  return at.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });
}
