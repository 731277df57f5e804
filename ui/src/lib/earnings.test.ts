import { describe, expect, it } from "vitest";
import type { HourEarnings } from "./bindings";
import { chartSeries, localDay, periodsWorthShowing, rate, signedMoney } from "./earnings";

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

describe("money", () => {
  const pricing = { currency: "EUR", credit_value: 0.5, price_per_kwh: 0.3 };
  it("gives the rate per hour and per day at that rate", () => {
    const r = rate(2_000_000, pricing);
    expect(r.perHour).toBeCloseTo(1.0);
    expect(r.perDay).toBeCloseTo(24.0);
  });
  it("shows the sign of a net amount", () => {
    expect(signedMoney(0.42, "EUR")).toMatch(/^\+.*0\.42/);
    expect(signedMoney(-0.1, "EUR")).toMatch(/^−.*0\.1/);
  });
  it("shows longer periods only once the node is older than the shorter one", () => {
    const periods = [{ days: 30 }, { days: 1 }, { days: 7 }];
    const now = 100 * 86_400_000;
    expect(periodsWorthShowing(periods, now - 3_600_000, now).map((p) => p.days)).toEqual([1]);
    expect(periodsWorthShowing(periods, now - 2 * 86_400_000, now).map((p) => p.days)).toEqual([1, 7]);
    expect(periodsWorthShowing(periods, now - 9 * 86_400_000, now).map((p) => p.days)).toEqual([1, 7, 30]);
    expect(periodsWorthShowing(periods, null, now).map((p) => p.days)).toEqual([1]);
  });
});
