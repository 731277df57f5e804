import { describe, expect, it } from "vitest";
import { loadTheme, nextTheme, resolveTheme, saveTheme } from "./theme";

function memoryStorage() {
  const items = new Map<string, string>();
  return {
    items,
    getItem: (key: string) => items.get(key) ?? null,
    setItem: (key: string, value: string) => void items.set(key, value),
    removeItem: (key: string) => void items.delete(key),
  };
}

describe("theme", () => {
  it("follows the system until the user chooses", () => {
    expect(resolveTheme("system", true)).toBe("dark");
    expect(resolveTheme("system", false)).toBe("light");
    expect(resolveTheme("light", true)).toBe("light");
  });
  it("cycles system, light, dark", () => {
    expect(nextTheme("system")).toBe("light");
    expect(nextTheme("light")).toBe("dark");
    expect(nextTheme("dark")).toBe("system");
  });
  it("saves a choice and forgets it for system", () => {
    const storage = memoryStorage();
    saveTheme(storage, "dark");
    expect(loadTheme(storage)).toBe("dark");
    saveTheme(storage, "system");
    expect(storage.items.size).toBe(0);
    expect(loadTheme(storage)).toBe("system");
  });
  it("treats a corrupted saved value as system", () => {
    const storage = memoryStorage();
    storage.setItem("hearth.theme", "purple");
    expect(loadTheme(storage)).toBe("system");
    expect(loadTheme(undefined)).toBe("system");
  });
});
