// The inspector panel: what the replica is doing and why a node is where
// it is, without opening SQLite inside the worker. It shows the sync
// status, the outbox (each pending op with its effect here), the recent
// committed ops with origin and author, the server's restores, the
// rejected ops, the replica's size, and a node lookup (the focused row by
// default, or an id typed or clicked): its place, the move that put it
// there and its history from the replica's own record.
//
// Every read is the replica's (`Arbor.outbox`, `recentOps`, `restores`,
// `rejected`, `place`, `history({local: true})`, `size`): no network, so
// it works offline. While open it reads again after change and status
// events, at most every REFRESH_MS: a burst of ops costs a few refreshes,
// not one per op (`data-refreshes` on the panel counts them, for tests).

import type { Arbor, HistoryEntry, NodeId, OpJson, OutboxEntry, PlaceJson, PlaceReport, ReplicaSize, RowCount, Status } from "../src/arbor.js";
import { ROOT, TRASH } from "../src/arbor.js";
import type { Outline } from "./outline.js";
import { byTestId, describe, h, showError, showNotice } from "./ui.js";

/** The least time between two refreshes. */
const REFRESH_MS = 500;
/** Outbox entries shown at most (`status.outbox` counts them all). */
const OUTBOX_SHOWN = 50;
/** Recent ops per "Older…" step. */
const RECENT_STEP = 50;
/** Restores shown at most. */
const RESTORES_SHOWN = 20;
/** History entries of the looked-up node. */
const NODE_HISTORY = 20;
/** Ancestors named in the looked-up node's path (nearest first). */
const PATH_SHOWN = 8;

export class InspectorPanel {
  readonly #arbor: Arbor;
  readonly #o: Outline;
  readonly #panel = byTestId("inspector");
  readonly #button = byTestId<HTMLButtonElement>("inspector-toggle");
  readonly #input = byTestId<HTMLInputElement>("inspector-node-input");
  readonly #status = byTestId("inspector-status");
  readonly #node = byTestId("inspector-node");
  readonly #outbox = byTestId("inspector-outbox");
  readonly #recent = byTestId("inspector-recent");
  readonly #restores = byTestId("inspector-restores");
  readonly #rejected = byTestId("inspector-rejected");
  readonly #size = byTestId("inspector-size");
  /** The row last focused in the outline: looked up while the input is empty. */
  #focused: NodeId | null = null;
  #recentLimit = RECENT_STEP;
  /** How many windows of 10,000 ops the restores are looked for in. */
  #restoreWindows = 1;
  #timer: number | null = null;
  #running = false;
  #dirty = false;
  #last = 0;
  #refreshes = 0;
  /** Node titles read during one refresh. */
  #titles = new Map<NodeId, string>();

  constructor(arbor: Arbor, outline: Outline) {
    this.#arbor = arbor;
    this.#o = outline;
    // Keep the focus in the row's title: the lookup follows that row.
    this.#button.addEventListener("mousedown", (e) => e.preventDefault());
    this.#button.addEventListener("click", () => this.setOpen(this.#panel.hidden));
    byTestId("inspector-close").addEventListener("click", () => this.setOpen(false));
    this.#input.addEventListener("input", () => this.#schedule());
    this.#panel.addEventListener("click", (e) => this.#onClick(e));
    arbor.subscribe(() => this.#schedule());
    arbor.onStatus(() => this.#schedule());
    outline.scroller.addEventListener("focusin", () => {
      const id = outline.rowFocus.focusedId;
      if (id === null) return;
      this.#focused = id;
      if (this.#input.value.trim() === "") this.#schedule();
    });
  }

  setOpen(open: boolean): void {
    this.#panel.hidden = !open;
    this.#button.setAttribute("aria-pressed", String(open));
    this.#button.classList.toggle("on", open);
    if (!open) return;
    this.#focused = this.#o.rowFocus.focusedId ?? this.#focused;
    this.#schedule();
  }

  #onClick(e: MouseEvent): void {
    const t = e.target instanceof Element ? e.target : null;
    const id = t?.closest<HTMLElement>("[data-look]")?.dataset.look;
    if (id) {
      this.#input.value = id;
      this.#schedule();
    } else if (t?.closest('[data-testid="inspector-recent-more"]')) {
      this.#recentLimit = Math.min(1000, this.#recentLimit + RECENT_STEP);
      this.#schedule();
    } else if (t?.closest('[data-testid="inspector-restores-more"]')) {
      this.#restoreWindows++;
      this.#schedule();
    } else if (t?.closest('[data-testid="inspector-rejected-clear"]')) {
      void this.#arbor.clearRejected().catch((err: unknown) => showError(err, "Could not clear the rejected ops"));
    } else if (t?.closest('[data-testid="inspector-count"]')) {
      // A full count reads every row (`size` stops at 10,000): only when asked.
      void this.#arbor.count().then(
        (n) => showNotice(`${n.toLocaleString()} nodes in this replica (counted)`),
        (err: unknown) => showError(err, "Could not count the nodes"),
      );
    } else if (t?.closest('[data-testid="inspector-node-focused"]')) {
      this.#input.value = "";
      this.#schedule();
    }
  }

  /** Reads again soon: at once if the last refresh is REFRESH_MS old, else
   * when it will be; events meanwhile join that one refresh. */
  #schedule(): void {
    if (this.#panel.hidden) return;
    this.#dirty = true;
    if (this.#timer !== null || this.#running) return;
    const wait = Math.max(0, this.#last + REFRESH_MS - performance.now());
    this.#timer = window.setTimeout(() => {
      this.#timer = null;
      void this.#run();
    }, wait);
  }

  async #run(): Promise<void> {
    if (this.#panel.hidden) return;
    this.#running = true;
    this.#dirty = false;
    this.#last = performance.now();
    try {
      await this.#refresh();
    } catch (e) {
      // Busy during a cold start: the next status event reads again.
      this.#status.dataset.error = describe(e);
    } finally {
      this.#running = false;
      this.#panel.dataset.refreshes = String(++this.#refreshes);
      if (this.#dirty) this.#schedule();
    }
  }

  async #refresh(): Promise<void> {
    const arbor = this.#arbor;
    this.#titles = new Map();
    const status = arbor.status();
    const [size, outbox, recent, rejected] = [await arbor.size(), await arbor.outbox(OUTBOX_SHOWN), await arbor.recentOps({ limit: this.#recentLimit }), await arbor.rejected()];
    const restores: HistoryEntry[] = [];
    let before: number | undefined;
    let more = false;
    for (let w = 0; w < this.#restoreWindows; w++) {
      const page = await arbor.restores({ before, limit: RESTORES_SHOWN });
      restores.push(...page.entries);
      more = page.nextBefore !== null;
      if (!more || restores.length >= RESTORES_SHOWN) break;
      before = page.nextBefore ?? undefined;
    }
    const typed = this.#input.value.trim().toLowerCase();
    const node = typed !== "" ? typed : this.#focused === null ? null : this.#o.queue.real(this.#focused);
    const ops = [...outbox.map((e) => e.op), ...recent.entries.map((e) => e.op), ...restores.map((e) => e.op), ...rejected.map((r) => r.op as OpJson)];
    await this.#readTitles(ops.flatMap((op) => (op.kind === "move" ? [op.node, op.parent] : [op.node])));
    delete this.#status.dataset.error;
    this.#renderStatus(status, size.conflicts);
    this.#renderSize(size);
    await this.#renderOutbox(outbox, status.outbox);
    await this.#renderRecent(recent.entries, recent.nextBefore !== null);
    await this.#renderRestores(restores.slice(0, RESTORES_SHOWN), more);
    await this.#renderRejected(rejected.map((r) => ({ op: r.op as OpJson, code: r.code, message: r.message })));
    await this.#renderNode(node, typed !== "");
  }

  // ------------------------------------------------------------ sections

  #renderStatus(s: Status, conflicts: number): void {
    const el = this.#status;
    el.dataset.state = s.state;
    el.dataset.outbox = String(s.outbox);
    el.dataset.rejected = String(s.rejected);
    el.replaceChildren(
      facts([
        ["state", s.state + (s.error ? ` (${s.error})` : "")],
        ["cursor", s.cursor === null ? "none (never synced)" : `seq ${s.cursor}`],
        ["outbox", `${s.outbox} pending`],
        ["rejected", String(s.rejected)],
        ["conflicts", String(conflicts)],
        ["peers", String(s.peers.length)],
        ["role", s.role === "owner" ? "owner (this tab holds the replica)" : "follower (another tab holds it)"],
        ["storage", s.storage === "opfs" ? "OPFS" : "memory (lost on reload)"],
        ...(s.root === null ? [] : ([["subtree of", s.root + (s.rootInTrash ? " (in the trash)" : "")]] as [string, string][])),
      ]),
    );
  }

  #renderSize(s: ReplicaSize): void {
    const el = this.#size;
    el.dataset.nodes = String(s.nodes.rows);
    el.dataset.history = String(s.history.rows);
    el.dataset.bytes = String(s.databaseBytes);
    el.replaceChildren(
      facts([
        ["database", formatBytes(s.databaseBytes)],
        ["nodes", count(s.nodes)],
        ["fields", count(s.fields)],
        ["move log", `${count(s.log)} moves`],
        ["history", `${count(s.history)} ops` + (s.historyStart === null ? "" : `, from seq ${s.historyStart}`)],
        ["outbox", String(s.outbox)],
        ["horizon", s.horizon ?? "none"],
      ]),
      h("button", { type: "button", class: "btn small", "data-testid": "inspector-count", title: "Reads every node: slow on a large replica" }, "Count the nodes"),
    );
  }

  async #renderOutbox(list: OutboxEntry[], total: number): Promise<void> {
    const el = this.#outbox;
    el.dataset.count = String(total);
    if (list.length === 0) {
      el.replaceChildren(empty("Nothing pending: the server has every edit of this replica."));
      return;
    }
    const items: HTMLElement[] = [];
    for (const e of list) {
      const row = h(
        "li",
        { "data-testid": "inspector-outbox-op", "data-stamp": e.op.stamp, "data-node": e.op.node, "data-applied": String(e.applied) },
        await this.#opLine(e.op, { from: e.from, applied: e.applied, pending: true }),
      );
      items.push(row);
    }
    if (total > list.length) items.push(h("li", { class: "muted" }, `… and ${total - list.length} more`));
    el.replaceChildren(h("ol", { class: "insp-list" }, ...items));
  }

  async #renderRecent(list: HistoryEntry[], more: boolean): Promise<void> {
    const el = this.#recent;
    if (list.length === 0) {
      el.replaceChildren(empty("No committed ops recorded yet (the record starts at this replica's first sync)."));
      return;
    }
    const items: HTMLElement[] = [];
    for (const e of list) items.push(await this.#entryLine(e, "inspector-recent-op"));
    const parts: HTMLElement[] = [h("ol", { class: "insp-list" }, ...items)];
    if (more && this.#recentLimit < 1000) parts.push(h("button", { type: "button", class: "btn small", "data-testid": "inspector-recent-more" }, "Older…"));
    el.replaceChildren(...parts);
  }

  async #renderRestores(list: HistoryEntry[], more: boolean): Promise<void> {
    const el = this.#restores;
    el.dataset.count = String(list.length);
    const parts: HTMLElement[] = [];
    if (list.length === 0) {
      const scope = `${(10_000 * this.#restoreWindows).toLocaleString()} ops`;
      parts.push(empty(more ? `None among the last ${scope}.` : "None: the server's restore rule brought nothing back."));
    } else {
      const items: HTMLElement[] = [];
      for (const e of list) items.push(await this.#entryLine(e, "inspector-restore"));
      parts.push(h("ol", { class: "insp-list" }, ...items));
    }
    if (more && list.length < RESTORES_SHOWN) parts.push(h("button", { type: "button", class: "btn small", "data-testid": "inspector-restores-more" }, "Look further back…"));
    el.replaceChildren(...parts);
  }

  async #renderRejected(list: { op: OpJson; code: string; message: string }[]): Promise<void> {
    const el = this.#rejected;
    el.dataset.count = String(list.length);
    if (list.length === 0) {
      el.replaceChildren(empty("None: the server refused no edit of this replica."));
      return;
    }
    const items: HTMLElement[] = [];
    for (const r of list) {
      items.push(
        h(
          "li",
          { "data-testid": "inspector-rejected-op", "data-code": r.code, "data-node": r.op.node, title: r.message },
          h("span", { class: "insp-code" }, r.code),
          " ",
          await this.#opLine(r.op, {}),
          h("div", { class: "muted" }, r.message),
        ),
      );
    }
    el.replaceChildren(h("ol", { class: "insp-list" }, ...items), h("button", { type: "button", class: "btn small", "data-testid": "inspector-rejected-clear" }, "Clear the list"));
  }

  async #renderNode(node: NodeId | null, typed: boolean): Promise<void> {
    const el = this.#node;
    const back = typed ? [h("button", { type: "button", class: "btn small", "data-testid": "inspector-node-focused" }, "Follow the focused row")] : [];
    if (node === null || node.startsWith("tmp-")) {
      el.dataset.node = "";
      el.replaceChildren(empty("Focus a row, or type or click a node id."), ...back);
      return;
    }
    el.dataset.node = node;
    let report: PlaceReport | null;
    try {
      report = await this.#arbor.place(node);
    } catch (e) {
      el.replaceChildren(empty(`Not a node: ${describe(e)}`), ...back);
      return;
    }
    if (report === null) {
      el.dataset.parent = "";
      el.replaceChildren(empty(`This replica does not have ${node}.`), ...back);
      return;
    }
    el.dataset.parent = report.parent ?? "";
    el.dataset.deleted = String(report.deleted);
    const path: (Node | string)[] = [];
    const shown = report.ancestors.slice(0, PATH_SHOWN).reverse();
    if (report.ancestors.length > PATH_SHOWN) path.push("… › ");
    for (const a of shown) path.push(await this.#nodeRef(a), " › ");
    path.push(h("strong", {}, await this.#title(node)));
    const history = await this.#arbor.history(node, { local: true, limit: NODE_HISTORY });
    const ops: HTMLElement[] = [];
    for (const e of history.entries) ops.push(await this.#entryLine(e, "inspector-node-op"));
    el.replaceChildren(
      h("div", { class: "insp-path", "data-testid": "inspector-node-path" }, ...path),
      facts([
        ["id", node],
        ["key", report.key ?? "none"],
        ["deleted", report.deleted ? "yes (under TRASH)" : "no"],
      ]),
      await this.#lastMove(report),
      h("h4", {}, "Its history here, newest first"),
      ops.length === 0 ? empty("No committed op of it in this replica's record.") : h("ol", { class: "insp-list" }, ...ops),
      ...back,
    );
  }

  /** Why the node is where it is, in a sentence. */
  async #lastMove(report: PlaceReport): Promise<HTMLElement> {
    const m = report.lastMove;
    if (m === null) {
      return h("p", { class: "insp-why", "data-testid": "inspector-last-move", "data-kind": "unknown" }, "Placed before this replica's record starts (the server's history has it).");
    }
    const attrs = {
      class: "insp-why",
      "data-testid": "inspector-last-move",
      "data-pending": String(m.pending),
      "data-seq": m.seq === null ? "" : String(m.seq),
      "data-author": m.author ?? "",
      "data-origin": m.origin ?? "",
      "data-parent": m.parent,
      title: `stamp ${m.stamp}${m.inLog ? "" : " (below the horizon: from the history record)"}`,
    };
    const under = await this.#nodeRef(m.parent);
    const from = m.from === null ? (m.inLog ? " (its create)" : "") : [" from under ", await this.#nodeRef(m.from.parent)];
    const who = m.pending ? "this replica's own move, not yet on the server" : m.origin === "restore" ? `the server's restore rule, at seq ${m.seq}` : m.seq === null ? "a move made before this replica's record starts" : `${m.author ?? "an unclaimed replica"}'s move, at seq ${m.seq}`;
    return h("p", attrs, "Put under ", under, ...(Array.isArray(from) ? from : [from]), " by ", h("strong", {}, who), ".");
  }

  // ------------------------------------------------------------ lines

  /** A committed op: seq, author, what it did. */
  async #entryLine(e: HistoryEntry, testid: string): Promise<HTMLElement> {
    return h(
      "li",
      { "data-testid": testid, "data-seq": String(e.seq), "data-author": e.author ?? "", "data-origin": e.origin, "data-node": e.op.node, "data-applied": String(e.applied) },
      h("span", { class: "insp-seq" }, String(e.seq)),
      " ",
      h("span", { class: "insp-author" }, e.origin === "restore" ? "restore rule" : (e.author ?? "?")),
      " ",
      await this.#opLine(e.op, { origin: e.origin, applied: e.applied }),
    );
  }

  /** What an op does, with its node and parent as links to the lookup. */
  async #opLine(op: OpJson, how: { from?: PlaceJson | null; applied?: boolean | null; origin?: "new" | "restore"; pending?: boolean }): Promise<HTMLElement> {
    const node = await this.#nodeRef(op.node);
    const span = h("span", { class: "insp-op", title: `stamp ${op.stamp}, known seq ${op.known_seq}` });
    if (op.kind === "set") {
      const lost = how.applied === false ? " (lost: a later write won)" : "";
      span.append(op.value === null ? `cleared ${op.field} of ` : `set ${op.field} of `, node, op.value === null ? "" : ` to “${clip(op.value)}”`, lost);
      return span;
    }
    // A pending move the log does not hold waits to be re-stamped (stamped
    // at or below the horizon) and is not shown yet.
    const skipped = how.applied === false ? " (skipped: a cycle)" : how.pending && how.applied === null ? " (not shown: waiting to be re-stamped)" : "";
    if (op.parent === TRASH) span.append("deleted ", node, skipped);
    else if (how.origin === "restore") span.append("brought ", node, " back under ", await this.#nodeRef(op.parent));
    else if (how.from === null && how.applied === true) span.append("created ", node, " under ", await this.#nodeRef(op.parent), skipped);
    else if (how.from?.parent === TRASH) span.append("restored ", node, " under ", await this.#nodeRef(op.parent), skipped);
    else span.append("moved ", node, " under ", await this.#nodeRef(op.parent), skipped);
    return span;
  }

  /** A node as a link that looks it up. */
  async #nodeRef(id: NodeId): Promise<HTMLElement> {
    if (id === ROOT) return h("span", { class: "insp-node" }, "ROOT");
    if (id === TRASH) return h("span", { class: "insp-node" }, "TRASH");
    return h("button", { type: "button", class: "insp-node link", "data-look": id, title: id }, await this.#title(id));
  }

  /** Reads the titles of `ids` at once (the worker answers the calls in a
   * row, without a round trip each). */
  async #readTitles(ids: NodeId[]): Promise<void> {
    const wanted = [...new Set(ids)].filter((id) => id !== ROOT && id !== TRASH && !this.#titles.has(id));
    await Promise.all(wanted.map((id) => this.#title(id)));
  }

  /** A node's title (or its short id), read once per refresh. */
  async #title(id: NodeId): Promise<string> {
    let t = this.#titles.get(id);
    if (t === undefined) {
      const info = await this.#arbor.node(id).catch(() => null);
      t = info?.fields.title ? `“${clip(info.fields.title)}”` : id.slice(0, 8);
      this.#titles.set(id, t);
    }
    return t;
  }
}

/** A definition list of facts. */
function facts(rows: [string, string][]): HTMLElement {
  return h("dl", { class: "insp-facts" }, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-fact": k }, v)]));
}

function empty(text: string): HTMLElement {
  return h("p", { class: "trash-empty" }, text);
}

function count(c: RowCount): string {
  return c.exact ? c.rows.toLocaleString() : `over ${c.rows.toLocaleString()}`;
}

function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 39)}…` : s;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
