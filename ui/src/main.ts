import "@fontsource-variable/inter";
import "./app.css";
import { mount } from "svelte";
import App from "./App.svelte";
import { TauriBackend, insideTauri } from "./lib/tauriBackend";

const target = document.getElementById("app");
if (!target) throw new Error("index.html has no #app element");

if (insideTauri()) {
  mount(App, { target, props: { backend: new TauriBackend() } });
} else {
  target.textContent =
    "Hearth's window runs inside the desktop app. Start it with the README's run command.";
}
