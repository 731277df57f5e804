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
