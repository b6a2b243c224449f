// The history panel: the server's history of the focused row (its moves,
// deletes, restores and field writes, newest first, with who made them),
// each entry with "Revert to here", which brings the row's subtree back to
// how it was right after that entry (`Arbor.revertSubtree`, one undo step).
// It reads the server, so it needs the connection; it reads again when the
// row changes and when this replica's outbox empties (its edits are then on
// the server).

import type { Arbor, HistoryEntry, NodeId } from "../src/arbor.js";
import { ROOT, TRASH } from "../src/arbor.js";
import type { Outline } from "./outline.js";
import { byTestId, describe, h, showNotice } from "./ui.js";

const PAGE = 50;

export class HistoryPanel {
  readonly #arbor: Arbor;
  readonly #o: Outline;
  readonly #panel = byTestId("history");
  readonly #list = byTestId("history-list");
  readonly #heading = byTestId("history-title");
  readonly #button = byTestId<HTMLButtonElement>("history-toggle");
  /** The node shown. */
  #node: NodeId | null = null;
  #entries: HistoryEntry[] = [];
  #nextBefore: number | null = null;
  #reading = 0;

  constructor(arbor: Arbor, outline: Outline) {
    this.#arbor = arbor;
    this.#o = outline;
    // Keep the focus in the row's title: the panel shows that row.
    this.#button.addEventListener("mousedown", (e) => e.preventDefault());
    this.#button.addEventListener("click", () => this.setOpen(this.#panel.hidden));
    byTestId("history-close").addEventListener("click", () => this.setOpen(false));
    this.#list.addEventListener("click", (e) => {
      const t = e.target instanceof Element ? e.target : null;
      const revert = t?.closest<HTMLElement>('[data-testid="history-revert"]');
      if (revert?.dataset.seq) void this.#revert(Number(revert.dataset.seq));
      else if (t?.closest('[data-testid="history-more"]')) void this.#load(true);
    });
    arbor.subscribe((c) => {
      const n = this.#node;
      if (!this.#panel.hidden && n && (c.reset || c.moved.includes(n) || c.fields.includes(n))) void this.#load(false);
    });
    // The server has this replica's edits once the outbox is empty: read again.
    let outbox = arbor.status().outbox;
    arbor.onStatus((s) => {
      if (!this.#panel.hidden && outbox > 0 && s.outbox === 0) void this.#load(false);
      outbox = s.outbox;
    });
  }

  setOpen(open: boolean): void {
    this.#panel.hidden = !open;
    this.#button.setAttribute("aria-pressed", String(open));
    if (!open) return;
    const focused = this.#o.rowFocus.focusedId;
    this.#node = focused ? this.#o.queue.real(focused) : this.#node;
    void this.#load(false);
  }

  /** Reads the first page again, or with `more` the next older one. */
  async #load(more: boolean): Promise<void> {
    const node = this.#node;
    if (!node || node.startsWith("tmp-")) {
      this.#heading.textContent = "History";
      this.#list.replaceChildren(h("p", { class: "trash-empty" }, "Focus a row to see its history."));
      return;
    }
    const ticket = ++this.#reading;
    try {
      const info = await this.#arbor.node(node);
      const page = await this.#arbor.history(node, { before: more ? (this.#nextBefore ?? undefined) : undefined, limit: PAGE });
      if (ticket !== this.#reading) return;
      this.#heading.textContent = `History of “${info?.fields.title || node.slice(0, 8)}”`;
      this.#panel.dataset.node = node;
      this.#entries = more ? [...this.#entries, ...page.entries] : page.entries;
      this.#nextBefore = page.nextBefore;
      this.#render();
    } catch (e) {
      if (ticket !== this.#reading) return;
      this.#list.replaceChildren(h("p", { class: "trash-empty" }, `Could not read the history: ${describe(e)}`));
    }
  }

  #render(): void {
    if (this.#entries.length === 0) {
      this.#list.replaceChildren(h("p", { class: "trash-empty" }, "The server has no history of this node yet."));
      return;
    }
    const items: HTMLElement[] = this.#entries.map((e) => {
      const text = `${e.author ?? "(restore rule)"}: ${what(e)}`;
      return h(
        "div",
        { class: "trash-item", "data-testid": "history-entry", "data-seq": String(e.seq) },
        h("span", { class: "trash-title", title: `${text}\nseq ${e.seq}, stamp ${e.op.stamp}` }, text),
        h("button", { type: "button", class: "restore", "data-testid": "history-revert", "data-seq": String(e.seq), title: "Bring this subtree back to how it was right after this" }, "Revert to here"),
      );
    });
    if (this.#nextBefore !== null) items.push(h("button", { type: "button", class: "btn", "data-testid": "history-more" }, "Older…"));
    this.#list.replaceChildren(...items);
  }

  async #revert(seq: number): Promise<void> {
    const node = this.#node;
    if (!node) return;
    const { queue, steps } = this.#o;
    await steps.close();
    const report = await queue.enqueue("Could not revert", () => this.#arbor.revertSubtree(node, seq));
    if (!report) return;
    const skipped = report.skipped.length > 0 ? `; ${report.skipped.length} left where they are (moved above it since)` : "";
    showNotice(`Reverted to seq ${seq}: ${report.moved} nodes moved, ${report.set} fields written${skipped} (Ctrl+Z undoes it)`);
  }
}

/** What a history entry did, in a few words. */
function what(e: HistoryEntry): string {
  const op = e.op;
  if (op.kind === "set") return op.value === null ? `cleared ${op.field}` : `set ${op.field} to “${op.value}”`;
  const skipped = e.applied === false ? " (skipped: a cycle)" : "";
  if (op.parent === TRASH) return `deleted${skipped}`;
  if (e.origin === "restore") return "brought back by the restore rule";
  if (op.parent === ROOT) return `moved to the top${skipped}`;
  return `moved under ${op.parent.slice(0, 8)}${skipped}`;
}
