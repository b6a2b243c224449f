// The outline: a virtualized tree view over an Arbor replica; this class wires its parts together.
//
// The parts, each in its own module:
//   model.ts          the model cache: loaded child lists and the flattened visible rows
//   expanded.ts       which nodes are expanded (remembered per space)
//   loader.ts         loads child lists and applies the replica's change events
//   edits.ts          create, indent, outdent, move, delete, restore
//   edit-queue.ts     how those edits show at once and reach the worker in order
//   titles.ts         typed titles and their saves
//   virtual-scroll.ts which rows have DOM elements, and where they are
//   row-element.ts    one row's DOM element
//   focus.ts          which row has keyboard focus
//   keyboard.ts       keyboard commands
//   drag-drop.ts      drag and drop of rows
//   undo.ts           which edits make one undo step; Ctrl+Z, Ctrl+Shift+Z, Ctrl+Y
//   selection.ts      multi-select (Ctrl+click, Shift+click, Shift+arrows)
//
// The parts reach each other through the Outline instance they are given.

import type { Arbor, NodeId } from "../src/arbor.js";
import { DragDrop } from "./drag-drop.js";
import { EditQueue, TEMP_PREFIX } from "./edit-queue.js";
import { Edits } from "./edits.js";
import { ExpandedSet } from "./expanded.js";
import { type Caret, RowFocus } from "./focus.js";
import { wireKeyboard } from "./keyboard.js";
import { Loader } from "./loader.js";
import { Model } from "./model.js";
import { rowOf } from "./row-element.js";
import { Selection } from "./selection.js";
import { Titles } from "./titles.js";
import { onNextFrame } from "./ui.js";
import { UndoSteps } from "./undo.js";
import { Viewport } from "./virtual-scroll.js";

/** A visible row as `rows()` reports it. */
export interface RowInfo {
  id: NodeId;
  depth: number;
  title: string;
}

export class Outline {
  readonly arbor: Arbor;
  readonly space: string;
  /** The node whose children are the top-level rows: ROOT, or the root of
   * a subtree outline (`?root=`). It has no row of its own. */
  readonly top: NodeId;
  readonly scroller: HTMLElement;
  readonly spacer: HTMLElement;

  /** Called when TRASH's children may have changed (the trash panel reloads). */
  onTrashChanged: (() => void) | null = null;
  /** Called after every render (once started) with the number of rows. */
  onRender: ((rows: number) => void) | null = null;
  /** Called for each row element brought up to date by a render (presence
   * markers are drawn into it). */
  onRowPainted: ((id: NodeId, el: HTMLDivElement) => void) | null = null;

  readonly expanded: ExpandedSet;
  readonly model: Model;
  readonly loader: Loader;
  readonly edits: Edits;
  readonly queue: EditQueue;
  readonly titles: Titles;
  readonly viewport: Viewport;
  readonly rowFocus: RowFocus;
  readonly dragDrop: DragDrop;
  readonly steps: UndoSteps;
  readonly selection: Selection;

  #loaded = false;
  #rebuildScheduled = false;

  constructor(arbor: Arbor, space: string, top: NodeId, scroller: HTMLElement, spacer: HTMLElement) {
    this.arbor = arbor;
    this.space = space;
    this.top = top;
    this.scroller = scroller;
    this.spacer = spacer;
    this.expanded = new ExpandedSet(space);
    this.loader = new Loader(this);
    this.model = new Model(top, this.expanded, this.loader);
    this.queue = new EditQueue(this);
    this.edits = new Edits(this);
    this.titles = new Titles(this);
    this.rowFocus = new RowFocus(this);
    this.viewport = new Viewport(this, scroller, spacer);
    this.steps = new UndoSteps(this);
    this.selection = new Selection(this);
    this.#wireRows();
    wireKeyboard(this, scroller);
    this.dragDrop = new DragDrop(this, scroller);
    window.addEventListener("beforeunload", () => void this.flushSaves());
  }

  /** True once the first load is done (renders report to `onRender` from then on). */
  get loaded(): boolean {
    return this.#loaded;
  }

  /** Subscribes to changes, loads the top (and the expanded nodes under it)
   * and renders; resolves once the first full render is done. */
  async start(): Promise<void> {
    this.arbor.subscribe((c) => this.loader.onChanges(c));
    await this.loader.reload(this.top);
    this.#loaded = true;
    this.rebuild();
    await this.settled();
    this.rebuild();
  }

  /** The whole flattened list of visible rows (not just the rendered window). */
  rows(): RowInfo[] {
    return this.model.rows.map((r) => ({ id: r.id, depth: r.depth, title: this.titles.of(r) }));
  }

  /** Saves typed titles now and resolves when no save, load, change batch
   * or queued edit is outstanding. */
  async settled(): Promise<void> {
    const { titles, loader, queue } = this;
    for (let i = 0; i < 10_000; i++) {
      if (titles.typedIds().length > 0) {
        await this.flushSaves();
        await queue.tail;
        if (titles.typedIds().some((id) => !id.startsWith(TEMP_PREFIX) || queue.aliasOf(id) !== undefined)) {
          await new Promise((r) => setTimeout(r, 16));
        }
        continue;
      }
      const loads = loader.loads();
      if (loads.length > 0) {
        await Promise.allSettled(loads);
        continue;
      }
      if (loader.busy || this.#rebuildScheduled) {
        await new Promise((r) => setTimeout(r, 16));
        continue;
      }
      const ops = queue.tail;
      await ops;
      if (ops === queue.tail && titles.typedIds().length === 0 && loader.loads().length === 0 && !loader.busy && !this.#rebuildScheduled) return;
    }
  }

  // ---------------------------------------------------------------- expand and focus

  isExpanded(id: NodeId): boolean {
    return this.expanded.has(id);
  }

  expandedIds(): NodeId[] {
    return this.expanded.ids();
  }

  setExpanded(id: NodeId, open: boolean): void {
    if (open === this.expanded.has(id)) return;
    if (open) this.expanded.add(id);
    else {
      this.expanded.delete(id);
      // Focus inside the collapsed subtree goes to the collapsed node.
      const focused = this.rowFocus.focusedId;
      if (focused && focused !== id && this.model.isAncestorOrSelf(id, focused)) this.rowFocus.want(id, "end");
    }
    this.rebuild();
  }

  toggle(id: NodeId): void {
    this.setExpanded(id, !this.expanded.has(id));
  }

  /** Scrolls the row into view and focuses its title. */
  focus(id: NodeId, caret: Caret = "end"): void {
    this.rowFocus.focus(id, caret);
  }

  /** Scrolls a row into view (no focus). */
  scrollTo(id: NodeId): void {
    const i = this.model.pos(id);
    if (i !== undefined) {
      this.viewport.scrollIntoView(i);
      this.viewport.render();
    }
  }

  /** Appends a new, empty node at the end of the top and focuses it at once;
   * resolves to its id once the replica has created it (see edits.ts). */
  add(): Promise<NodeId | undefined> {
    return this.edits.add();
  }

  /** Brings a deleted node back (to where it was deleted from). */
  restore(id: NodeId): Promise<void> {
    return this.edits.restore(id);
  }

  /** Saves every title typed but not saved yet. */
  flushSaves(): Promise<void> {
    return this.titles.flush();
  }

  /** Reloads every loaded list (what a `reset` does; see loader.ts). */
  reloadAll(): void {
    this.loader.reloadAll();
  }

  // ---------------------------------------------------------------- rows

  /** Flattens the loaded lists into rows again and renders; a focused row
   * that is on screen stays on screen when rows above it come or go. */
  rebuild(): void {
    const anchor = this.rowFocus.anchor();
    this.model.flattenAll();
    this.rowFocus.follow(anchor);
    this.viewport.render();
    this.rowFocus.fulfil();
  }

  /** Rebuilds at the next frame (the lists changed). */
  scheduleRebuild(): void {
    this.model.rowsDirty = true;
    if (this.#rebuildScheduled) return;
    this.#rebuildScheduled = true;
    onNextFrame(() => {
      this.#rebuildScheduled = false;
      if (this.model.rowsDirty) this.rebuild();
    });
  }

  // ---------------------------------------------------------------- row events

  /** Clicks on a row's buttons, typing into a title, focus moving between rows. */
  #wireRows(): void {
    const sc = this.scroller;
    // Buttons must not steal focus from the title being edited.
    sc.addEventListener("mousedown", (e) => {
      if (e.target instanceof Element && e.target.closest("button")) e.preventDefault();
    });

    sc.addEventListener("click", (e) => {
      const rowEl = rowOf(e.target);
      const id = rowEl?.dataset.id;
      if (!rowEl || !id) return;
      const t = e.target as Element;
      if ((e.ctrlKey || e.metaKey || e.shiftKey) && !t.closest("button")) {
        // Multi-select (selection.ts).
        e.preventDefault();
        if (e.shiftKey) this.selection.extendTo(id);
        else this.selection.toggle(id);
        return;
      }
      if (t.closest('[data-testid="toggle"]')) this.toggle(id);
      else if (t.closest('[data-testid="delete"]')) void this.edits.remove(id, this.rowFocus.focusedId === id);
      else if (!t.closest("input")) this.focus(id, "end");
    });

    sc.addEventListener("input", (e) => {
      const t = e.target;
      if (!(t instanceof HTMLInputElement) || !t.classList.contains("title")) return;
      const id = rowOf(t)?.dataset.id;
      if (!id) return;
      this.steps.beginFor(id); // typing into a title: one step until the row's editing ends
      this.titles.onInput(id, t.value);
    });

    sc.addEventListener("focusin", (e) => {
      const id = rowOf(e.target)?.dataset.id;
      if (id) this.rowFocus.focusedId = id;
    });

    sc.addEventListener("focusout", (e) => {
      const id = rowOf(e.target)?.dataset.id;
      if (!id) return;
      if (e.target instanceof HTMLInputElement) void this.titles.saveNow(id);
      if (rowOf(e.relatedTarget)?.dataset.id !== id) this.steps.endFor(id);
      if (rowOf(e.relatedTarget)?.dataset.id !== id && this.rowFocus.focusedId === id) this.rowFocus.focusedId = null;
    });
  }
}
