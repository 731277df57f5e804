import { describe, expect, it } from "vitest";
import { PAGE_ROWS, dayStart, pagesFor, visibleRows } from "./history";

describe("history windowing", () => {
  it("shows only the rows in view, with overscan, within the total", () => {
    expect(visibleRows(0, 400, 40, 1_000_000)).toEqual({ first: 0, last: 20 });
    expect(visibleRows(40_000_000 - 400, 400, 40, 1_000_000)).toEqual({ first: 999_980, last: 1_000_000 });
    expect(visibleRows(4000, 400, 40, 1_000_000, 0)).toEqual({ first: 100, last: 110 });
    expect(visibleRows(0, 400, 40, 0)).toEqual({ first: 0, last: 0 });
  });
  it("fetches the pages that cover the rows", () => {
    expect(pagesFor(0, 20)).toEqual([0]);
    expect(pagesFor(PAGE_ROWS - 5, PAGE_ROWS + 5)).toEqual([0, 1]);
    expect(pagesFor(999_980, 1_000_000)).toEqual([4999]);
    expect(pagesFor(5, 5)).toEqual([]);
  });
  it("reads a day from a date input", () => {
    expect(dayStart("2026-11-25")).toBe(new Date(2026, 10, 25).getTime());
    expect(dayStart("")).toBeNull();
    expect(dayStart("25/11/2026")).toBeNull();
  });
});
