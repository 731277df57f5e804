// The Earnings page's arithmetic: hourly totals into chart series and daily bars.

import type { HourEarnings } from "./bindings";

const HOUR_MS = 3_600_000;

export type ChartRange = "24h" | "7d" | "30d";

/** Series for a chart: x in seconds (as uPlot wants), credits per bucket. */
export interface Series {
  x: number[];
  credits: number[];
}

/** Start of the local day that `ms` falls in. */
export function localDay(ms: number): number {
  const at = new Date(ms);
  return new Date(at.getFullYear(), at.getMonth(), at.getDate()).getTime();
}

/** Hourly buckets for the last 24 hours or 7 days (empty hours as zero), or daily buckets for
 * the last 30 days, ending at `nowMs`. */
export function chartSeries(hours: HourEarnings[], range: ChartRange, nowMs: number): Series {
  const byStart = new Map<number, number>();
  if (range === "30d") {
    for (const h of hours) {
      const day = localDay(h.at_ms);
      byStart.set(day, (byStart.get(day) ?? 0) + h.micro_credits);
    }
    const x: number[] = [];
    const credits: number[] = [];
    let day = localDay(nowMs);
    for (let i = 0; i < 30; i++) {
      x.unshift(day / 1000);
      credits.unshift((byStart.get(day) ?? 0) / 1e6);
      // The previous local day (DST-safe: step back into it, then to its start).
      day = localDay(day - 1);
    }
    return { x, credits };
  }
  for (const h of hours) byStart.set(h.at_ms, h.micro_credits);
  const count = range === "24h" ? 24 : 24 * 7;
  const lastHour = Math.floor(nowMs / HOUR_MS) * HOUR_MS;
  const x: number[] = [];
  const credits: number[] = [];
  for (let i = count - 1; i >= 0; i--) {
    const at = lastHour - i * HOUR_MS;
    x.push(at / 1000);
    credits.push((byStart.get(at) ?? 0) / 1e6);
  }
  return { x, credits };
}

/** Money with its currency, e.g. "€0.42" (or "0.42 XYZ" for codes the browser lacks). */
export function money(amount: number, currency: string): string {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency, maximumFractionDigits: 4 }).format(
      amount,
    );
  } catch {
    return `${amount.toFixed(4)} ${currency}`;
  }
}
