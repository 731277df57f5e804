import "@fontsource-variable/inter";
import "./app.css";
import { mount } from "svelte";
import App from "./App.svelte";
import { TauriBackend, insideTauri } from "./lib/tauriBackend";
import { HttpBackend, tokenFromPage } from "./lib/httpBackend";

const target = document.getElementById("app");
if (!target) throw new Error("index.html has no #app element");

const token = insideTauri() ? null : tokenFromPage(window.location, window.sessionStorage);
if (insideTauri()) {
  mount(App, { target, props: { backend: new TauriBackend() } });
} else if (token) {
  mount(App, { target, props: { backend: new HttpBackend("", token) } });
} else {
  target.textContent =
    "Open the address `hearth-node run` printed (it carries the access token), or start the desktop app.";
}
