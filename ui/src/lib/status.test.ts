import { describe, expect, it } from "vitest";
import type { NodeStatus, PoolStatus } from "./bindings";
import { describeReason, detail, headline, newer, overrideOffer, waitingForModels } from "./status";

const running = (revision: number): NodeStatus => ({
  activity: { kind: "running" },
  changed_at_ms: 1_700_000_000_000 + revision,
  revision,
});

const pausedFromTray = (revision: number): NodeStatus => ({
  activity: { kind: "paused", reason: { kind: "user", source: "tray", until_ms: null } },
  changed_at_ms: 1_700_000_000_000 + revision,
  revision,
});

describe("newer", () => {
  it("takes the first snapshot", () => {
    expect(newer(null, running(0))).toEqual(running(0));
  });
  it("keeps the current snapshot when an older one arrives late", () => {
    const current = pausedFromTray(3);
    expect(newer(current, running(2))).toBe(current);
  });
  it("ignores a repeat of the same revision", () => {
    const current = running(4);
    expect(newer(current, running(4))).toBe(current);
  });
  it("replaces with a later revision", () => {
    expect(newer(running(4), pausedFromTray(5)).revision).toBe(5);
  });
});

describe("wording", () => {
  it("names where the pause came from", () => {
    expect(describeReason({ kind: "user", source: "tray", until_ms: null })).toBe("Paused from the tray");
    expect(describeReason({ kind: "user", source: "window", until_ms: null })).toBe("Paused from the window");
    expect(describeReason({ kind: "user", source: "cli", until_ms: null })).toBe("Paused from the command line");
    expect(describeReason({ kind: "game", name: "Cyberpunk2077.exe" })).toBe(
      "Paused: Cyberpunk2077.exe is running",
    );
    expect(describeReason({ kind: "cooling_down", until_ms: 95_000 }, 65_000)).toBe(
      "Your game ended; resuming in 0:30",
    );
  });
  it("says what a storage fault needs", () => {
    expect(describeReason({ kind: "disk_full", needed_bytes: 119_500_000 })).toBe(
      "Paused: the disk is full: 120 MB more free space is needed; Hearth resumes by itself",
    );
    expect(describeReason({ kind: "storage_failing", error: "the disk is read-only" })).toBe(
      "Paused: Hearth cannot save its data: the disk is read-only; it resumes by itself once it can",
    );
  });
  it("gives a headline and a detail line", () => {
    expect(headline(running(0))).toBe("Running");
    expect(headline(pausedFromTray(1))).toBe("Paused");
    expect(detail(pausedFromTray(1))).toBe("Paused from the tray. No new work will start.");
    const throttled: NodeStatus = {
      activity: { kind: "throttled", duty_percent: 50 },
      changed_at_ms: 0,
      revision: 2,
    };
    expect(headline(throttled)).toBe("Throttled");
    expect(detail(throttled)).toBe(
      "Working 50% of the time while you use the computer, so it stays smooth.",
    );
  });
});

describe("a node without models yet", () => {
  const pool = (serving: string[], downloading: number): PoolStatus => ({
    url: "https://pool.example",
    name: "Example pool",
    connected: true,
    demo: false,
    error: null,
    terms: null,
    notices: [],
    downloads: Array.from({ length: downloading }, (_, i) => ({
      model: `model-${i}`,
      done_bytes: 0,
      total_bytes: 1e6,
      bytes_per_second: 0,
      error: null,
    })),
    new_version: null,
    serving,
  });
  it("says it waits for models rather than that it takes work", () => {
    expect(waitingForModels(pool([], 2))).toBe(true);
    expect(detail(running(0), 0, waitingForModels(pool([], 2)))).toBe(
      "Hearth is fetching the models it runs from the pool; work starts once they are here.",
    );
  });
  it("takes work with any model it has, and says so once they are all here", () => {
    expect(waitingForModels(pool(["all-minilm-l6-v2"], 2))).toBe(false);
    expect(waitingForModels(pool([], 0))).toBe(false);
    expect(waitingForModels({ ...pool([], 2), connected: false })).toBe(false);
    expect(waitingForModels(null)).toBe(false);
    expect(detail(running(0), 0, false)).toBe("Hearth is taking work from the pool.");
  });
});

describe("the owner's override", () => {
  const paused = (reason: Extract<NodeStatus["activity"], { kind: "paused" }>["reason"]): NodeStatus => ({
    activity: { kind: "paused", reason },
    changed_at_ms: 0,
    revision: 1,
  });
  it("offers Resume anyway for a game, Skip wait for the cooldown, nothing for heat or the owner's own pause", () => {
    expect(overrideOffer(paused({ kind: "game", name: "Doom.exe" }))).toEqual({
      label: "Resume anyway",
      explains: "Work while Doom.exe runs, until it closes. Your game may run slower.",
      timed: true,
    });
    expect(overrideOffer(paused({ kind: "cooling_down", until_ms: 5 }))?.label).toBe("Skip wait");
    expect(overrideOffer(paused({ kind: "temperature" }))).toBeNull();
    expect(overrideOffer(paused({ kind: "user", source: "tray", until_ms: null }))).toBeNull();
    expect(overrideOffer(running(0))).toBeNull();
  });
  it("says what is overridden while it lasts", () => {
    const status: NodeStatus = {
      ...running(3),
      overriding: { reason: { kind: "game", name: "Doom.exe" }, until_ms: null, source: "window" },
    };
    expect(detail(status)).toBe("Working while Doom.exe runs, until it ends — you chose Resume anyway.");
  });
});
