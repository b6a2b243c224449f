// Virtual scrolling: only the rows in view (plus an overscan) have DOM elements, in a spacer as tall as all rows.
//
// Row elements are absolutely positioned (fixed height), kept in display
// order in the DOM, and re-rendered on scroll and resize.

import type { NodeId } from "../src/arbor.js";
import type { Outline } from "./outline.js";
import { createRowEl, type RowEls, updateRowEl } from "./row-element.js";

/** Fixed row height in pixels (matches --row in style.css). */
export const ROW_HEIGHT = 28;
const OVERSCAN = 10;

export class Viewport {
  readonly #o: Outline;
  readonly #scroller: HTMLElement;
  readonly #spacer: HTMLElement;
  #els = new Map<NodeId, RowEls>();
  #spacerHeight = -1;

  constructor(outline: Outline, scroller: HTMLElement, spacer: HTMLElement) {
    this.#o = outline;
    this.#scroller = scroller;
    this.#spacer = spacer;
    scroller.addEventListener("scroll", () => this.render(), { passive: true });
    new ResizeObserver(() => this.render()).observe(scroller);
  }

  /** The element of `id`'s row, if it is rendered. */
  element(id: NodeId): RowEls | undefined {
    return this.#els.get(id);
  }

  /** The index of the first row fully in view. */
  firstVisible(): number {
    return Math.ceil(this.#scroller.scrollTop / ROW_HEIGHT);
  }

  /** The index of the last row fully in view. */
  lastVisible(): number {
    return Math.floor((this.#scroller.scrollTop + this.#scroller.clientHeight) / ROW_HEIGHT) - 1;
  }

  /** True if row `i` is at least partly in view. */
  isInView(i: number): boolean {
    const y = i * ROW_HEIGHT;
    return y + ROW_HEIGHT > this.#scroller.scrollTop && y < this.#scroller.scrollTop + this.#scroller.clientHeight;
  }

  /** The y (in client coordinates) below the last row. */
  bottomOfRows(): number {
    return this.#spacer.getBoundingClientRect().top + this.#o.model.rows.length * ROW_HEIGHT;
  }

  /** Scrolls as little as needed to show row `i` whole. */
  scrollIntoView(i: number): void {
    const top = i * ROW_HEIGHT;
    const bottom = top + ROW_HEIGHT;
    const st = this.#scroller.scrollTop;
    const h = this.#scroller.clientHeight;
    if (top < st) this.#scroller.scrollTop = top;
    else if (bottom > st + h) this.#scroller.scrollTop = bottom - h;
  }

  /** The placeholder `temp` is now node `id`: its element too. */
  rename(temp: NodeId, id: NodeId): void {
    const r = this.#els.get(temp);
    if (r) {
      this.#els.delete(temp);
      this.#els.set(id, r);
      r.el.dataset.id = id;
    }
  }

  /** Paints the rows in the viewport (plus overscan, plus the focused and
   * the dragged row wherever they are), removes every other row element and
   * keeps the row elements in display order in the DOM (so `nth()` over
   * [data-testid=row] is the visual order), never moving the focused one. */
  render(): void {
    const { model, rowFocus, dragDrop, titles } = this.#o;
    const rows = model.rows;
    const height = rows.length * ROW_HEIGHT;
    if (height !== this.#spacerHeight) {
      this.#spacer.style.height = `${height}px`;
      this.#spacerHeight = height;
    }
    const top = this.#scroller.scrollTop;
    const viewport = this.#scroller.clientHeight || window.innerHeight || 800;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + viewport) / ROW_HEIGHT) + OVERSCAN);
    const shown: number[] = [];
    for (let i = first; i < last; i++) shown.push(i);
    for (const id of [rowFocus.focusedId, dragDrop.draggedId]) {
      const i = id ? model.pos(id) : undefined;
      if (i !== undefined && (i < first || i >= last) && !shown.includes(i)) shown.push(i);
    }
    shown.sort((a, b) => a - b);

    const keep = new Set<NodeId>();
    for (const i of shown) keep.add(rows[i].id);
    for (const [id, r] of this.#els) {
      if (keep.has(id)) continue;
      if (titles.isTyped(id)) void titles.saveNow(id);
      if (rowFocus.focusedId === id) rowFocus.focusedId = null;
      r.el.remove();
      this.#els.delete(id);
    }

    const active = document.activeElement;
    let cur = this.#spacer.firstChild;
    for (const i of shown) {
      const el = this.#paint(i);
      if (el === cur) {
        cur = cur.nextSibling;
      } else if (el.parentNode === this.#spacer && active instanceof Node && el.contains(active)) {
        // Moving the focused row would blur it: move what is in front of it
        // to the end instead (later rows are placed again below).
        while (cur && cur !== el) {
          const next: ChildNode | null = cur.nextSibling;
          this.#spacer.appendChild(cur);
          cur = next;
        }
        cur = el.nextSibling;
      } else {
        this.#spacer.insertBefore(el, cur);
      }
    }
    this.#scroller.dataset.rows = String(rows.length);
    if (this.#o.loaded) this.#o.onRender?.(rows.length);
  }

  /** Brings row `i`'s element (created if needed, not inserted) up to date. */
  #paint(i: number): HTMLDivElement {
    const { model, expanded, titles } = this.#o;
    const row = model.rows[i];
    let r = this.#els.get(row.id);
    if (!r) {
      r = createRowEl(row.id);
      this.#els.set(row.id, r);
    }
    const kids = model.hasKids(row);
    updateRowEl(r, {
      y: i * ROW_HEIGHT,
      parent: row.parent,
      depth: row.depth,
      kids,
      open: kids && expanded.has(row.id),
      title: titles.of(row),
      typed: titles.isTyped(row.id),
    });
    this.#o.selection.paint(row.id, r.el);
    this.#o.onRowPainted?.(row.id, r.el);
    return r.el;
  }
}
