import { describe, expect, it } from "vitest";
import { celsius, credits, duration, energy, percent, taskName } from "./format";

describe("format", () => {
  it("shows micro-credits as credits", () => {
    expect(credits(0)).toBe("0.0000");
    expect(credits(1234)).toBe("0.0012");
    expect(credits(2_500_000, 2)).toBe("2.50");
  });
  it("shows durations and running jobs", () => {
    expect(duration(1000, 1820)).toBe("820 ms");
    expect(duration(0, 3400)).toBe("3.4 s");
    expect(duration(0, null)).toBe("running");
  });
  it("names tasks", () => {
    expect(taskName("image_classification")).toBe("Image classification");
    expect(taskName("")).toBe("Job");
  });
  it("never shows a little energy or a missing sensor as zero", () => {
    expect(energy(0.0423)).toBe("0.042 Wh");
    expect(energy(12.34)).toBe("12.3 Wh");
    expect(energy(1250)).toBe("1.25 kWh");
    expect(energy(0)).toBe("0 Wh");
    expect(percent(null)).toBe("not reported");
    expect(celsius(undefined)).toBe("no sensor");
    expect(celsius(61.4)).toBe("61 °C");
  });
});
