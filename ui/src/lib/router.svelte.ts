// The window's pages, addressed by the location hash (#overview, #earnings, …) so that the
// back button, reloads and links work without a server.

export const PAGES = [
  { id: "overview", title: "Overview", subtitle: "What Hearth is doing with this computer right now." },
  { id: "earnings", title: "Earnings", subtitle: "What your GPU earned, and what it cost in electricity." },
  { id: "history", title: "History", subtitle: "Every job this computer ran, from the ledger." },
  { id: "hardware", title: "Hardware", subtitle: "What this computer has, and what it can do." },
  { id: "settings", title: "Settings", subtitle: "Your pool, your limits, your rules." },
  { id: "diagnostics", title: "Diagnostics", subtitle: "What Hearth has been doing, for you or for a bug report." },
] as const;

export type PageId = (typeof PAGES)[number]["id"];

/** The page a hash names; the overview for anything else. */
export function pageFromHash(hash: string): PageId {
  const id = hash.replace(/^#\/?/, "");
  return PAGES.find((p) => p.id === id)?.id ?? "overview";
}

/** The current page, following the location hash. */
export class Router {
  page = $state<PageId>(pageFromHash(window.location.hash));

  /** Start following the hash; returns the function that stops. */
  listen(): () => void {
    const onChange = () => (this.page = pageFromHash(window.location.hash));
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }
}
