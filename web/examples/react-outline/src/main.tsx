// Opens the replica, connects it, and renders the outline.
//
// URL: /?space=demo&user=alice[&server=http://127.0.0.1:8080][&token=...]
// Without `token`, it asks the dev server (`arbor-server dev`) for one.
import { createRoot } from "react-dom/client";
import { Arbor, type ConnectOptions } from "@arbor/web";
import { ArborProvider, whenIdle } from "@arbor/web/react";
import { App, renders } from "./App.js";

const params = new URLSearchParams(location.search);
const space = params.get("space") ?? "demo";
const user = params.get("user") ?? "guest";
const server = params.get("server") ?? location.origin;

async function devToken(): Promise<string> {
  const res = await fetch(`${server}/dev/token?space=${encodeURIComponent(space)}&user=${encodeURIComponent(user)}`);
  if (!res.ok) throw new Error(`GET /dev/token: HTTP ${res.status}`);
  return ((await res.json()) as { token: string }).token;
}

const arbor = await Arbor.open({ space });
const connection: ConnectOptions = { server, token: params.get("token") ?? (await devToken()) };
// Follow the browser's network state: offline, stop syncing (edits queue
// in the outbox); online again, sync what queued.
addEventListener("offline", () => void arbor.disconnect());
addEventListener("online", () => void arbor.connect(connection));
if (navigator.onLine) await arbor.connect(connection);

// For tests and the console.
Object.assign(window, { arbor, renders, arborIdle: () => whenIdle(arbor) });

createRoot(document.getElementById("app")!).render(
  <ArborProvider arbor={arbor}>
    <App user={user} />
  </ArborProvider>,
);
