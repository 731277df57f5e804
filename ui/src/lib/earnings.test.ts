import { describe, expect, it } from "vitest";
import type { HourEarnings } from "./bindings";
import { chartSeries, localDay } from "./earnings";

const hour = (at_ms: number, micro_credits: number): HourEarnings => ({
  at_ms,
  micro_credits,
  jobs_completed: 1,
  jobs_failed: 0,
  energy_wh: 0,
  energy_estimated: false,
});

describe("earnings charts", () => {
  const now = new Date(2026, 10, 25, 14, 30).getTime();
  const thisHour = new Date(2026, 10, 25, 14).getTime();
  it("fills 24 hourly buckets ending with this hour, empty hours as zero", () => {
    const s = chartSeries([hour(thisHour, 2_000_000), hour(thisHour - 3_600_000 * 5, 500_000)], "24h", now);
    expect(s.x).toHaveLength(24);
    expect(s.x[23]).toBe(thisHour / 1000);
    expect(s.credits[23]).toBe(2);
    expect(s.credits[18]).toBe(0.5);
    expect(s.credits.reduce((a, b) => a + b)).toBe(2.5);
  });
  it("sums hours into 30 local days", () => {
    const yesterday = new Date(2026, 10, 24, 9).getTime();
    const s = chartSeries(
      [hour(thisHour, 1_000_000), hour(thisHour - 3_600_000, 1_000_000), hour(yesterday, 3_000_000)],
      "30d",
      now,
    );
    expect(s.x).toHaveLength(30);
    expect(s.x[29]).toBe(localDay(now) / 1000);
    expect(s.credits[29]).toBe(2);
    expect(s.credits[28]).toBe(3);
  });
});
