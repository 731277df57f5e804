// Numbers as people read them.

/** Millionths of a credit as credits, e.g. 1234 → "0.0012". */
export function credits(micro: number, digits = 4): string {
  return (micro / 1e6).toFixed(digits);
}

/** A clock time for today, a date and time otherwise. */
export function when(unixMs: number, now: Date = new Date()): string {
  const at = new Date(unixMs);
  const sameDay = at.toDateString() === now.toDateString();
  return sameDay
    ? at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : at.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/** How long a job ran, e.g. "820 ms", "3.4 s". */
export function duration(startMs: number, endMs: number | null): string {
  if (endMs === null) return "running";
  const ms = Math.max(0, endMs - startMs);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Bytes in GiB with one decimal. */
export function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** A task id as words. */
export function taskName(task: string): string {
  switch (task) {
    case "embeddings":
      return "Embeddings";
    case "chat":
      return "Chat";
    case "image_classification":
      return "Image classification";
    case "chat_score":
      return "Chat check";
    default:
      return task || "Job";
  }
}

/** A percentage, or words when there is no reading. */
export function percent(value: number | null | undefined): string {
  return value === null || value === undefined ? "not reported" : `${Math.round(value)} %`;
}

/** Degrees Celsius, or words when there is no sensor. */
export function celsius(value: number | null | undefined): string {
  return value === null || value === undefined ? "no sensor" : `${Math.round(value)} °C`;
}

/** Watts: one decimal below 10 W, whole watts above. */
export function watts(value: number): string {
  return value < 10 ? `${value.toFixed(1)} W` : `${Math.round(value)} W`;
}

/** Energy as people read it: "0.042 Wh", "12.3 Wh", "1.25 kWh" (never a bare zero for a little). */
export function energy(wh: number): string {
  if (wh >= 1000) return `${(wh / 1000).toFixed(2)} kWh`;
  if (wh >= 10) return `${wh.toFixed(1)} Wh`;
  if (wh > 0) return `${Number(wh.toPrecision(2))} Wh`;
  return "0 Wh";
}
