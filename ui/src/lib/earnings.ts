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
  // A fraction of a cent keeps two significant digits rather than reading as zero.
  const tiny = amount !== 0 && Math.abs(amount) < 0.01;
  const digits = tiny ? { maximumSignificantDigits: 2 } : { maximumFractionDigits: 4 };
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency, ...digits }).format(amount);
  } catch {
    return `${amount.toFixed(4)} ${currency}`;
  }
}

/** What the owner's settings say credits and electricity are worth. */
export interface Pricing {
  currency: string;
  /** One credit in `currency`. */
  credit_value: number;
  price_per_kwh: number;
}

/** Credits (in millionths) in the owner's currency. */
export function creditsValue(micro: number, pricing: Pricing): number {
  return (micro / 1e6) * pricing.credit_value;
}

/** Money with an explicit sign, e.g. "+€0.42", "−€0.10". */
export function signedMoney(amount: number, currency: string): string {
  const text = money(Math.abs(amount), currency);
  if (Math.abs(amount) < 1e-9) return text;
  return amount > 0 ? `+${text}` : `−${text}`;
}

/** The earning rate now: per hour (the last 60 minutes) and "≈ per day at this rate". */
export function rate(lastHourMicro: number, pricing: Pricing): { perHour: number; perDay: number } {
  const perHour = creditsValue(lastHourMicro, pricing);
  return { perHour, perDay: perHour * 24 };
}

/**
 * The period cards worth showing: the last day always, a longer period only once the node has
 * worked for longer than the period before it (on day one, three cards would say the same).
 */
export function periodsWorthShowing<T extends { days: number }>(
  periods: T[],
  firstWorkMs: number | null,
  nowMs: number,
): T[] {
  const age = firstWorkMs === null ? 0 : nowMs - firstWorkMs;
  const sorted = [...periods].sort((a, b) => a.days - b.days);
  return sorted.filter((_period, i) => i === 0 || age > sorted[i - 1].days * 24 * HOUR_MS);
}
