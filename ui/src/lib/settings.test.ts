import { describe, expect, it } from "vitest";
import { payoutProblem } from "./settings";

describe("payout address", () => {
  it("accepts an address or none, and names what is wrong with a bad one", () => {
    expect(payoutProblem("")).toBeNull();
    expect(payoutProblem("0xA1b2C3d4")).toBeNull();
    expect(payoutProblem("my wallet")).toBe("The payout address cannot contain spaces or line breaks.");
    expect(payoutProblem("x".repeat(201))).toBe("The payout address is longer than 200 characters.");
    expect(payoutProblem("a\u0007b")).toBe("The payout address contains a control character.");
  });
});
