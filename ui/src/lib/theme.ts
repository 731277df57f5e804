// Light and dark themes: follow the system unless the user picked one.

export type ThemeChoice = "system" | "light" | "dark";

const STORAGE_KEY = "hearth.theme";

/** The saved choice, or "system" when none (or an unknown value) is saved. */
export function loadTheme(storage: Pick<Storage, "getItem"> | undefined): ThemeChoice {
  const saved = storage?.getItem(STORAGE_KEY);
  return saved === "light" || saved === "dark" ? saved : "system";
}

export function saveTheme(storage: Pick<Storage, "setItem" | "removeItem">, choice: ThemeChoice) {
  if (choice === "system") storage.removeItem(STORAGE_KEY);
  else storage.setItem(STORAGE_KEY, choice);
}

/** The theme to draw with, given the choice and whether the system prefers dark. */
export function resolveTheme(choice: ThemeChoice, systemPrefersDark: boolean): "light" | "dark" {
  if (choice === "system") return systemPrefersDark ? "dark" : "light";
  return choice;
}

/** The next choice when the user clicks the theme button. */
export function nextTheme(choice: ThemeChoice): ThemeChoice {
  return choice === "system" ? "light" : choice === "light" ? "dark" : "system";
}
