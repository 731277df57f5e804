// Inside Hearth's window (Tauri): the node runs in the background process, and the window
// asks its shell once where that process's API is. Everything after that is plain HTTP.

import { invoke } from "@tauri-apps/api/core";

/** Where the node's local API is, as the window's shell found it. */
export interface CoreAddress {
  url: string;
  token: string;
}

/** True when the page runs inside Hearth's window. */
export function insideDesktopWindow(): boolean {
  return typeof window !== "undefined" && "__TAURI_INTERNALS__" in window;
}

/** The API's address and token (waits while the background process starts). */
export function coreAddress(): Promise<CoreAddress> {
  return invoke<CoreAddress>("core_address");
}
