// Multi-select: Ctrl+click (⌘-click) toggles a row, Shift+click selects the
// rows from the focused (or last clicked) one, Shift+↑/↓ in a title extends
// the selection, Escape clears it. Dragging a selected row moves every
// selected row, and Delete with the focused row selected deletes them all:
// each as one undo step (edits.ts, undo.ts).

import type { NodeId } from "../src/arbor.js";
import type { Outline } from "./outline.js";

export class Selection {
  readonly #o: Outline;
  #ids = new Set<NodeId>();
  /** Where a Shift+click range starts. */
  #anchor: NodeId | null = null;

  constructor(outline: Outline) {
    this.#o = outline;
  }

  get size(): number {
    return this.#ids.size;
  }

  has(id: NodeId): boolean {
    return this.#ids.has(this.#o.queue.real(id));
  }

  /** The selected rows still on screen, in display order, without those
   * under another selected row (they move with it). */
  ids(): NodeId[] {
    const { model } = this.#o;
    const out: NodeId[] = [];
    for (const r of model.rows) {
      if (!this.#ids.has(r.id)) continue;
      if (out.some((top) => model.isAncestorOrSelf(top, r.id))) continue;
      out.push(r.id);
    }
    return out;
  }

  /** Ctrl+click: adds or removes `id`. */
  toggle(id: NodeId): void {
    id = this.#o.queue.real(id);
    if (this.#ids.size === 0) {
      const focused = this.#o.rowFocus.focusedId;
      if (focused && focused !== id) this.#ids.add(this.#o.queue.real(focused));
    }
    if (this.#ids.has(id)) this.#ids.delete(id);
    else this.#ids.add(id);
    this.#anchor = id;
    this.#o.viewport.render();
  }

  /** Shift+click or Shift+arrow: selects the rows from the anchor (the
   * focused row if none) through `id`. */
  extendTo(id: NodeId): void {
    const { model, queue, rowFocus } = this.#o;
    id = queue.real(id);
    const from = this.#anchor ?? (rowFocus.focusedId ? queue.real(rowFocus.focusedId) : id);
    this.#anchor = from;
    const i = model.pos(from);
    const j = model.pos(id);
    this.#ids.clear();
    if (i === undefined || j === undefined) this.#ids.add(id);
    else for (let k = Math.min(i, j); k <= Math.max(i, j); k++) this.#ids.add(model.rows[k].id);
    this.#o.viewport.render();
  }

  clear(): void {
    if (this.#ids.size === 0 && this.#anchor === null) return;
    this.#ids.clear();
    this.#anchor = null;
    this.#o.viewport.render();
  }

  /** Marks a rendered row as selected or not. */
  paint(id: NodeId, el: HTMLElement): void {
    const on = this.#ids.has(id);
    if (el.classList.contains("selected") !== on) {
      el.classList.toggle("selected", on);
      el.setAttribute("aria-selected", String(on));
    }
  }
}
