// Arbor's demo outliner: startup, the header's buttons (offline toggle,
// add, history, trash, inspect, the conflicts badge), the empty-outline hint and `window.outline`. The sync status
// (state, peers, cold-start progress, storage warning) is in sync-status.ts,
// the outline itself in outline.ts.
//
// URL: /demo/?space=demo&user=alice[&root=<node id>][&token=...][&memory=1][&realtime=wss://...]
//
// With `root`, the page opens that node's subtree as its own outline: a
// subtree replica (`OpenOptions.root`) whose top-level rows are the root's
// children; Add, outdent and a drop below the last row stop at the root.
//
// Tests drive the page through the DOM (data-testid attributes) and through
// `window.arbor` (the Arbor handle) and `window.outline` (see OutlineApi).
// The others' cursors are chips in their rows ([data-testid=cursor], with
// data-sub), from presence.ts.

import { Arbor, type NodeId, ROOT, type Status, type SyncState } from "../src/arbor.js";
import { ConflictsIndicator } from "./conflicts.js";
import { HistoryPanel } from "./history-panel.js";
import { InspectorPanel } from "./inspector.js";
import { Outline, type RowInfo } from "./outline.js";
import { Presence } from "./presence.js";
import { SyncStatus } from "./sync-status.js";
import { TrashPanel } from "./trash.js";
import { byTestId, showError } from "./ui.js";

/** What `window.outline` offers. */
export interface OutlineApi {
  /** Resolves after the first render (the top and the expanded nodes loaded). */
  ready: Promise<void>;
  space: string;
  user: string;
  /** The node whose children are the top-level rows: ROOT, or `?root=`. */
  top: NodeId;
  /** Every visible row, flattened in display order (not just the rendered window). */
  rows(): RowInfo[];
  /** Resolves when no load, change batch or queued edit is outstanding. */
  settled(): Promise<void>;
  expand(id: NodeId): void;
  collapse(id: NodeId): void;
  toggle(id: NodeId): void;
  isExpanded(id: NodeId): boolean;
  /** Scrolls the row into view and focuses its title input. */
  focus(id: NodeId): void;
  /** Scrolls the row into view. */
  scrollTo(id: NodeId): void;
  /** Like the Add button: appends an empty node to the top; resolves to its id. */
  add(): Promise<NodeId | null>;
  /** Saves every title typed but not yet saved. */
  flush(): Promise<void>;
}

declare global {
  interface Window {
    arbor?: Arbor;
    outline?: OutlineApi;
  }
}

const params = new URLSearchParams(location.search);
const space = params.get("space") || "demo";
const user = params.get("user") || guestName();
/** A subtree outline's root (`?root=`), or null for the whole thoughtspace. */
const root = params.get("root")?.trim().toLowerCase() || null;
const top: NodeId = root ?? ROOT;

let outline: Outline | null = null;
let resolveReady!: () => void;
let rejectReady!: (e: unknown) => void;
const ready = new Promise<void>((res, rej) => {
  resolveReady = res;
  rejectReady = rej;
});
ready.catch(() => {}); // a failed start is shown in the toast

window.outline = {
  ready,
  space,
  user,
  top,
  rows: () => outline?.rows() ?? [],
  settled: async () => {
    await ready;
    await outline?.settled();
  },
  expand: (id) => outline?.setExpanded(id, true),
  collapse: (id) => outline?.setExpanded(id, false),
  toggle: (id) => outline?.toggle(id),
  isExpanded: (id) => outline?.isExpanded(id) ?? false,
  focus: (id) => outline?.focus(id),
  scrollTo: (id) => outline?.scrollTo(id),
  add: async () => (outline ? ((await outline.add()) ?? null) : null),
  flush: async () => {
    await outline?.flushSaves();
  },
};

function guestName(): string {
  try {
    const saved = sessionStorage.getItem("arbor-demo:user");
    if (saved) return saved;
    const name = `guest-${1000 + Math.floor(Math.random() * 9000)}`;
    sessionStorage.setItem("arbor-demo:user", name);
    return name;
  } catch {
    return `guest-${1000 + Math.floor(Math.random() * 9000)}`;
  }
}

// ------------------------------------------------------------------ elements

const syncStatus = new SyncStatus(user);
const offlineBtn = byTestId<HTMLButtonElement>("offline-toggle");
const addBtn = byTestId<HTMLButtonElement>("add");
const trashBtn = byTestId<HTMLButtonElement>("trash-toggle");
const scroller = byTestId("scroller");
const spacer = byTestId("spacer");
const emptyEl = byTestId("empty");
const errorEl = byTestId("error");

const rootEl = byTestId("root");
byTestId("space").textContent = space;
byTestId("user").textContent = user;
rootEl.hidden = root === null;
document.title = `${space} · Arbor`;
errorEl.addEventListener("click", () => {
  errorEl.hidden = true;
});

// ------------------------------------------------------------------ status

let lastState: SyncState | null = null;
let rowCount = -1; // unknown until the first render

/** The "nothing here" hint: an empty outline that is not still loading. */
function renderEmpty(): void {
  emptyEl.hidden = rowCount !== 0 || lastState === "cold_start";
}

function renderStatus(s: Status): void {
  syncStatus.render(s);
  // Leaving a cold start: the replica was replaced; the `reset` event does
  // the same, this is a safety net.
  if (lastState === "cold_start" && s.state !== "cold_start") outline?.reloadAll();
  // Entering one: the lists show the server's first pages meanwhile
  // (progressive hydration, docs/BROWSER.md).
  if (lastState !== "cold_start" && s.state === "cold_start") outline?.reloadAll();
  lastState = s.state;
  renderEmpty();
}

/** A subtree outline names its root in the header (and the tab's title),
 * by its title once the replica has it. */
async function renderRoot(arbor: Arbor): Promise<void> {
  if (root === null) return;
  const info = await arbor.node(root).catch(() => null);
  const title = info?.fields.title || root.slice(0, 8);
  rootEl.textContent = title;
  rootEl.title = `Subtree of ${root}`;
  document.title = `${title} · ${space} · Arbor`;
}

// ------------------------------------------------------------------ connection

let token: string | null = params.get("token");
let online = true;
let toggling = false;

async function fetchToken(): Promise<string> {
  const res = await fetch(`/dev/token?space=${encodeURIComponent(space)}&user=${encodeURIComponent(user)}`);
  if (!res.ok) throw new Error(`GET /dev/token: HTTP ${res.status}`);
  const body = (await res.json()) as { token?: unknown };
  if (typeof body.token !== "string") throw new Error("GET /dev/token: no token in the answer");
  return body.token;
}

async function goOnline(arbor: Arbor): Promise<void> {
  token ??= await fetchToken();
  const realtime = params.get("realtime") || undefined;
  await arbor.connect({ server: params.get("server") || location.origin, token, realtime });
}

function renderOffline(): void {
  offlineBtn.textContent = online ? "Go offline" : "Go online";
  offlineBtn.setAttribute("aria-pressed", String(!online));
  offlineBtn.dataset.offline = String(!online);
  offlineBtn.classList.toggle("on", !online);
}

// ------------------------------------------------------------------ startup

async function main(): Promise<void> {
  renderOffline();
  const arbor = await Arbor.open({
    space,
    workerUrl: new URL("./arbor-worker.js", location.href),
    memory: params.get("memory") === "1" || params.get("memory") === "true",
    root: root ?? undefined,
  });
  window.arbor = arbor;
  renderStatus(arbor.status());
  arbor.onStatus(renderStatus);
  if (root !== null) {
    void renderRoot(arbor);
    arbor.subscribe((c) => {
      if (c.reset || c.fields.includes(root) || c.moved.includes(root)) void renderRoot(arbor);
    });
  }

  const view = new Outline(arbor, space, top, scroller, spacer);
  outline = view;
  // Who this page is and where its cursor is, shown to the others; their
  // cursors on the rows.
  new Presence(arbor, view, user);
  view.onRender = (n) => {
    rowCount = n;
    renderEmpty();
  };
  // The conflicts badge next to the status (conflicts.ts); undo and redo
  // keys are the outline's (undo.ts).
  new ConflictsIndicator(arbor);
  // The focused row's history from the server, with "Revert to here".
  new HistoryPanel(arbor, view);
  // The inspector: status, outbox, recent ops, restores, rejected ops,
  // sizes, and why a node is where it is (inspector.ts).
  new InspectorPanel(arbor, view);
  const trash = new TrashPanel(arbor, view, byTestId("trash"), byTestId("trash-list"), trashBtn);
  view.onTrashChanged = () => void trash.reload();
  byTestId("trash-close").addEventListener("click", () => trash.setOpen(false));

  addBtn.addEventListener("click", () => void view.add());
  emptyEl.addEventListener("click", () => void view.add());

  offlineBtn.addEventListener("click", async () => {
    if (toggling) return;
    toggling = true;
    offlineBtn.disabled = true;
    try {
      if (online) {
        online = false;
        renderOffline();
        await arbor.disconnect();
      } else {
        online = true;
        renderOffline();
        await goOnline(arbor);
      }
    } catch (e) {
      showError(e, online ? "Could not connect" : "Could not disconnect");
      if (online) {
        online = false;
        renderOffline();
      }
    } finally {
      toggling = false;
      offlineBtn.disabled = false;
    }
  });

  // Connect while the tree loads; a failure leaves the replica offline
  // (edits keep working and queue in the outbox).
  const connecting = goOnline(arbor).catch((e: unknown) => {
    online = false;
    renderOffline();
    showError(e, "Could not connect");
  });

  await view.start();
  resolveReady();
  await connecting;
}

main().catch((e: unknown) => {
  showError(e, "Could not open the replica");
  rejectReady(e);
});
