// Drag and drop of rows: before, after or into the row under the pointer, or to the end of the outline.
//
// The upper quarter of a row drops before it, the lower quarter after it,
// the middle makes the dragged node its last child; below the last row is
// the end of the outline's top (ROOT, or a subtree outline's root). A drop
// into the dragged node's own subtree is refused. Dragging a selected row
// moves every selected row, in order (selection.ts).

import type { NodeId, Position } from "../src/arbor.js";
import { TEMP_PREFIX } from "./edit-queue.js";
import type { Outline } from "./outline.js";
import { rowOf } from "./row-element.js";

const DRAG_MIME = "application/x-arbor-node";

type Drop = { kind: "before" | "after" | "inside"; target: NodeId } | { kind: "end" };

export class DragDrop {
  readonly #o: Outline;
  readonly #scroller: HTMLElement;
  #dragId: NodeId | null = null;
  #drop: Drop | null = null;

  constructor(outline: Outline, scroller: HTMLElement) {
    this.#o = outline;
    this.#scroller = scroller;
    scroller.addEventListener("dragstart", (e) => this.#onDragStart(e));
    scroller.addEventListener("dragover", (e) => this.#onDragOver(e));
    scroller.addEventListener("dragleave", (e) => {
      if (!(e.relatedTarget instanceof Node) || !scroller.contains(e.relatedTarget)) this.#setDrop(null);
    });
    scroller.addEventListener("drop", (e) => this.#onDrop(e));
    scroller.addEventListener("dragend", () => this.#endDrag());
  }

  /** The row being dragged from this page (it stays rendered wherever it is). */
  get draggedId(): NodeId | null {
    return this.#dragId;
  }

  /** The placeholder `temp` is now node `id`. */
  rename(temp: NodeId, id: NodeId): void {
    if (this.#dragId === temp) this.#dragId = id;
  }

  #onDragStart(e: DragEvent): void {
    const rowEl = rowOf(e.target);
    const id = rowEl?.dataset.id;
    if (!rowEl || !id) return;
    // Dragging selected text out of a title is a text drag, not a move.
    const t = e.target;
    if (t instanceof HTMLInputElement && t.selectionStart !== t.selectionEnd) return;
    if (id.startsWith(TEMP_PREFIX)) {
      e.preventDefault(); // not created yet
      return;
    }
    this.#dragId = id;
    if (e.dataTransfer) {
      const row = this.#o.model.row(id);
      e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData(DRAG_MIME, id);
      e.dataTransfer.setData("text/plain", (row && this.#o.titles.of(row)) || id);
    }
    rowEl.classList.add("dragging");
  }

  /** What dropping at this point would do, or null if it is not allowed. */
  #dropAt(e: DragEvent): Drop | null {
    const dragId = this.#dragId;
    const rowEl = rowOf(e.target);
    const target = rowEl?.dataset.id;
    if (rowEl && target) {
      const rect = rowEl.getBoundingClientRect();
      const y = rect.height > 0 ? (e.clientY - rect.top) / rect.height : 0.5;
      const kind = y < 0.25 ? "before" : y > 0.75 ? "after" : "inside";
      if (dragId && this.#o.model.isAncestorOrSelf(dragId, target)) return null;
      return { kind, target };
    }
    // Below the last row: the end of the outline's top.
    if (e.clientY >= this.#o.viewport.bottomOfRows()) return { kind: "end" };
    return null;
  }

  #onDragOver(e: DragEvent): void {
    const ours = this.#dragId !== null || (e.dataTransfer?.types.includes(DRAG_MIME) ?? false);
    if (!ours) return;
    // Scroll near the edges.
    const rect = this.#scroller.getBoundingClientRect();
    if (e.clientY < rect.top + 32) this.#scroller.scrollTop -= 12;
    else if (e.clientY > rect.bottom - 32) this.#scroller.scrollTop += 12;
    const drop = this.#dropAt(e);
    this.#setDrop(drop);
    if (!drop) {
      if (e.dataTransfer) e.dataTransfer.dropEffect = "none";
      return;
    }
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = "move";
  }

  #onDrop(e: DragEvent): void {
    const o = this.#o;
    const id = this.#dragId ?? e.dataTransfer?.getData(DRAG_MIME) ?? "";
    const drop = this.#dropAt(e);
    this.#endDrag();
    if (!id || !drop) return;
    e.preventDefault();
    // A selected row drags every selected row along (one undo step).
    const many = o.selection.size > 1 && o.selection.has(id) ? o.selection.ids() : null;
    const move = (parent: NodeId, pos: Position) => (many ? o.edits.moveMany(many, parent, pos) : o.edits.move(id, parent, pos));
    if (drop.kind === "end") {
      void move(o.top, "last");
      return;
    }
    const target = o.model.row(drop.target);
    if (!target || o.model.isAncestorOrSelf(id, drop.target)) return;
    if (many?.some((m) => o.model.isAncestorOrSelf(m, drop.target))) return;
    if (drop.kind === "inside") void move(drop.target, "last");
    else void move(target.parent, drop.kind === "before" ? { before: drop.target } : { after: drop.target });
  }

  /** Shows where a drop would go (drop-before/-after/-inside on the row,
   * drop-end on the scroller). */
  #setDrop(drop: Drop | null): void {
    const old = this.#drop;
    const same =
      old === drop ||
      (old !== null && drop !== null && old.kind === drop.kind && (old.kind === "end" || (drop.kind !== "end" && old.target === drop.target)));
    if (same) return;
    for (const el of this.#scroller.querySelectorAll(".drop-before, .drop-after, .drop-inside")) {
      el.classList.remove("drop-before", "drop-after", "drop-inside");
    }
    this.#scroller.classList.remove("drop-end");
    this.#drop = drop;
    if (!drop) return;
    if (drop.kind === "end") this.#scroller.classList.add("drop-end");
    else this.#o.viewport.element(drop.target)?.el.classList.add(`drop-${drop.kind}`);
  }

  #endDrag(): void {
    this.#setDrop(null);
    if (this.#dragId) this.#o.viewport.element(this.#dragId)?.el.classList.remove("dragging");
    this.#dragId = null;
    this.#o.viewport.render();
  }
}
