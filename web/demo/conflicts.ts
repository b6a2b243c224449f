// The conflicts indicator in the header: a small badge counting what this
// replica wrote that did not stand (or what the server restored), which
// opens a list of the latest ones, with who did it; "Dismiss" empties the
// replica's conflict list.
//
// Conflicts come with change events (`Changes.conflicts`); the list itself
// is read from the replica (`Arbor.conflicts`), at startup too, so ones
// found before this page opened show as well.

import type { Arbor, Conflict, NodeId } from "../src/arbor.js";
import { byTestId, h, showError } from "./ui.js";

/** The latest conflicts shown at most. */
const SHOW = 20;

export class ConflictsIndicator {
  readonly #arbor: Arbor;
  readonly #badge = byTestId<HTMLButtonElement>("conflicts");
  readonly #panel = byTestId("conflicts-panel");
  readonly #list = byTestId("conflicts-list");
  #count = 0;
  #reading: Promise<void> | null = null;
  #again = false;

  constructor(arbor: Arbor) {
    this.#arbor = arbor;
    this.#badge.addEventListener("click", () => this.setOpen(this.#panel.hidden));
    byTestId("conflicts-dismiss").addEventListener("click", () => void this.dismiss());
    byTestId("conflicts-close").addEventListener("click", () => this.setOpen(false));
    arbor.subscribe((c) => {
      if (c.conflicts.length > 0 || c.reset) void this.reload();
    });
    void this.reload();
  }

  setOpen(open: boolean): void {
    this.#panel.hidden = !open || this.#count === 0;
    this.#badge.setAttribute("aria-expanded", String(!this.#panel.hidden));
  }

  /** Reads the latest conflicts again (calls that overlap coalesce). */
  reload(): Promise<void> {
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = (async () => {
      try {
        do {
          this.#again = false;
          const list = await this.#arbor.conflicts(SHOW);
          await this.#render(list);
        } while (this.#again);
      } catch (e) {
        showError(e, "Could not read the conflicts");
      } finally {
        this.#reading = null;
      }
    })();
    return this.#reading;
  }

  /** Empties the replica's conflict list and hides the badge. */
  async dismiss(): Promise<void> {
    try {
      await this.#arbor.clearConflicts();
    } catch (e) {
      showError(e, "Could not clear the conflicts");
    }
    await this.reload();
  }

  async #render(list: Conflict[]): Promise<void> {
    this.#count = list.length;
    const badge = this.#badge;
    badge.hidden = list.length === 0;
    badge.dataset.count = String(list.length);
    badge.textContent = `⚠ ${list.length === SHOW ? `${SHOW}+` : list.length}`;
    badge.title = list.length === 1 ? "1 conflict: an edit of yours did not stand" : `${list.length} conflicts: edits of yours that did not stand`;
    if (list.length === 0) {
      this.setOpen(false);
      this.#list.replaceChildren();
      return;
    }
    const names = await this.#titles(list.map((c) => c.node));
    this.#list.replaceChildren(
      ...list.map((c) => h("li", { "data-testid": "conflict", "data-kind": c.kind, "data-node": c.node }, describeConflict(c, names.get(c.node) ?? c.node.slice(0, 8)))),
    );
  }

  /** The nodes' titles (or their short ids). */
  async #titles(ids: NodeId[]): Promise<Map<NodeId, string>> {
    const out = new Map<NodeId, string>();
    for (const id of new Set(ids)) {
      const info = await this.#arbor.node(id).catch(() => null);
      const t = info?.fields.title;
      if (t) out.set(id, `“${t}”`);
    }
    return out;
  }
}

/** One conflict in a sentence. */
export function describeConflict(c: Conflict, node: string): string {
  const who = c.by ?? "someone";
  const v = (s: string | null) => (s === null ? "(empty)" : `“${s}”`);
  switch (c.kind) {
    case "field_overwritten":
      return `${who} changed ${c.field} of ${node} at the same time: ${v(c.kept)} kept, yours ${v(c.lost)} lost`;
    case "move_skipped":
      return `Your move of ${node} was skipped: with moves made at the same time it would have made a cycle`;
    case "move_overridden":
      return `${who} moved ${node} elsewhere at the same time as you`;
    case "restored":
      return `${node} was brought back from the trash: someone edited inside it while it was deleted`;
  }
}
