// The History page's windowing: which rows are on screen, and which pages of rows to fetch,
// so that a ledger of a million jobs scrolls as smoothly as one of ten.

/** Rows fetched per request. */
export const PAGE_ROWS = 200;

/** Rows from `first` (inclusive) to `last` (exclusive) that a viewport shows, plus `overscan`
 * rows either side, within `[0, total)`. */
export function visibleRows(
  scrollTop: number,
  viewportHeight: number,
  rowHeight: number,
  total: number,
  overscan = 10,
): { first: number; last: number } {
  const first = Math.max(0, Math.floor(scrollTop / rowHeight) - overscan);
  const last = Math.min(total, Math.ceil((scrollTop + viewportHeight) / rowHeight) + overscan);
  return { first, last: Math.max(first, last) };
}

/** The page indexes (of `PAGE_ROWS` rows) that cover rows `[first, last)`. */
export function pagesFor(first: number, last: number): number[] {
  if (last <= first) return [];
  const pages = [];
  for (let page = Math.floor(first / PAGE_ROWS); page <= Math.floor((last - 1) / PAGE_ROWS); page++) {
    pages.push(page);
  }
  return pages;
}

/** The start of a local day, e.g. "2026-11-25" → ms since the epoch (`null` when empty/bad). */
export function dayStart(day: string): number | null {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) return null;
  const [y, m, d] = day.split("-").map(Number);
  const at = new Date(y, m - 1, d).getTime();
  return Number.isNaN(at) ? null : at;
}
