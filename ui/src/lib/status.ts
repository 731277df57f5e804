// Pure helpers that turn node status into what the user reads.

import type { ControlSource, NodeStatus, PauseReason } from "./bindings";

/** Keep the newer of two snapshots; events and query answers may arrive in either order. */
export function newer(current: NodeStatus | null, incoming: NodeStatus): NodeStatus {
  if (current === null || incoming.revision > current.revision) return incoming;
  return current;
}

const PLACES: Record<ControlSource, string> = {
  window: "this window",
  tray: "the tray",
  cli: "the command line",
};

/** "Paused from the tray", etc. */
export function describeReason(reason: PauseReason): string {
  switch (reason.kind) {
    case "user":
      return `Paused from ${PLACES[reason.source]}`;
  }
}

/** The headline word for a status. */
export function headline(status: NodeStatus): "Running" | "Paused" {
  return status.activity.kind === "running" ? "Running" : "Paused";
}

/** One line under the headline. */
export function detail(status: NodeStatus): string {
  const activity = status.activity;
  if (activity.kind === "running") return "Hearth may use this computer's GPU for work.";
  return `${describeReason(activity.reason)}. No new work will start.`;
}

/** The time of the last change, e.g. "14:05", in the given or the user's locale. */
export function since(status: NodeStatus, locale?: string): string {
  const at = new Date(status.changed_at_ms);
  return at.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });
}
