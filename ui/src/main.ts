import "@fontsource-variable/inter";
import "./app.css";
import { mount } from "svelte";
import App from "./App.svelte";
import { coreAddress, insideDesktopWindow } from "./lib/desktopWindow";
import { HttpBackend, tokenFromPage } from "./lib/httpBackend";

// Under the POSIX "C" locale WebKitGTK reports navigator.language as "C", which is not a
// language tag: Intl (and libraries that pass it on, such as uPlot) would throw. Fall back to
// the browser's default formatting then.
if (!isLanguageTag(navigator.language)) {
  Object.defineProperty(navigator, "language", { value: "en-US", configurable: true });
  Object.defineProperty(navigator, "languages", { value: ["en-US"], configurable: true });
}

function isLanguageTag(tag: string): boolean {
  try {
    return Intl.getCanonicalLocales(tag).length === 1;
  } catch {
    return false;
  }
}

const target = document.getElementById("app");
if (!target) throw new Error("index.html has no #app element");

if (insideDesktopWindow()) {
  target.textContent = "Starting Hearth…";
  coreAddress().then(
    ({ url, token }) => {
      target.textContent = "";
      mount(App, { target, props: { backend: new HttpBackend(url, token, "save-to-folder") } });
    },
    (error: unknown) => {
      target.textContent = `Hearth could not start: ${String(error)}`;
    },
  );
} else {
  const token = tokenFromPage(window.location, window.sessionStorage);
  if (token) {
    mount(App, { target, props: { backend: new HttpBackend("", token, "download") } });
  } else {
    target.textContent =
      "Open the address `hearth-node run` printed (it carries the access token), or start the desktop app.";
  }
}
