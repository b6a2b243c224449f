// The outline: a virtualized tree view over an Arbor replica.
//
// Model. `lists` holds the loaded child lists of ROOT and of every expanded
// node that is visible; `rows` is the depth-first flattening of those lists
// (the whole visible outline, which may be 100k rows long); `index` maps a
// node id to its row. Only the rows in the viewport (plus an overscan) have
// DOM elements, absolutely positioned inside a spacer as tall as all rows.
//
// Changes events are collected and handled once per animation frame: a
// parent whose children changed has its list reloaded (paged, 5000 at a
// time); a node whose fields changed gets its fields patched with `node(id)`;
// `reset` reloads every list.
//
// Structural edits (create, indent, outdent, drag and drop, delete) apply to
// the local lists at once, so the next keystroke sees them (a create shows
// a focused placeholder row whose id starts with "tmp-" until the worker
// returns the real id). The worker calls run one after another in a queue;
// an edit is re-applied to any list read that may predate it, so a reload
// in flight never undoes it on screen; the reload that its Changes event
// triggers then makes the lists exact again.

import { type Arbor, type Changes, type NodeId, type NodeView, type Position, ROOT, TRASH } from "../src/arbor.js";
import { onNextFrame, showError } from "./ui.js";

/** Fixed row height in pixels (matches --row in style.css). */
export const ROW_HEIGHT = 28;
const OVERSCAN = 10;
const PAGE = 5000;
const INDENT = 20;
const SAVE_DELAY = 300;
/** More changed-field nodes than this in one frame: reload their parents instead. */
const FIELD_PATCH_MAX = 64;
/** At most this many hasChildren probes per frame. */
const PROBE_MAX = 256;
const DRAG_MIME = "application/x-arbor-node";

/** A visible row as `rows()` reports it. */
export interface RowInfo {
  id: NodeId;
  depth: number;
  title: string;
}

interface Row {
  id: NodeId;
  depth: number;
  parent: NodeId;
  /** The NodeView object held in the parent's list (shared, patched in place). */
  view: NodeView;
}

interface RowEls {
  el: HTMLDivElement;
  /** The toggle button or the bullet, whichever the row shows. */
  slot: HTMLElement;
  input: HTMLInputElement;
  y: number;
  depth: number;
  kids: boolean;
  open: boolean;
}

/** Placeholder rows (shown before the worker confirms a create) have ids
 * with this prefix until the real id is known. */
export const TEMP_PREFIX = "tmp-";

/** A structural edit made here: applied to the local lists at once, sent
 * to the worker in order, and re-applied to any list read that may predate
 * the worker applying it (so reloads never undo what the user just did). */
interface LocalEdit {
  /** The node's view (a placeholder's id becomes the real id once created). */
  view: NodeView;
  /** The parent it left; null for a create. */
  from: NodeId | null;
  /** The parent it went to (TRASH for a delete). */
  to: NodeId;
  /** Where among `to`'s children (ids may be placeholders). */
  pos: Position;
  /** #seq when the worker confirmed it; null while queued. */
  resolvedSeq: number | null;
}

type Drop = { kind: "before" | "after" | "inside"; target: NodeId } | { kind: "end" };

type Caret = "start" | "end" | number | null;

export class Outline {
  readonly arbor: Arbor;
  readonly space: string;
  readonly scroller: HTMLElement;
  readonly spacer: HTMLElement;

  /** Called when TRASH's children may have changed (the trash panel reloads). */
  onTrashChanged: (() => void) | null = null;
  /** Called after every render with the number of rows. */
  onRender: ((rows: number) => void) | null = null;

  #lists = new Map<NodeId, NodeView[]>();
  #loading = new Map<NodeId, Promise<void>>();
  #again = new Set<NodeId>();
  #expanded: Set<NodeId>;
  #rows: Row[] = [];
  #index = new Map<NodeId, number>();
  #els = new Map<NodeId, RowEls>();
  #spacerHeight = -1;

  /** Titles typed but not yet confirmed saved. */
  #pending = new Map<NodeId, string>();
  /** The save in flight per node (its value and promise). */
  #saving = new Map<NodeId, { value: string; done: Promise<void> }>();
  #saveTimers = new Map<NodeId, number>();

  #focusedId: NodeId | null = null;
  #pendingFocus: { id: NodeId; caret: Caret; until: number } | null = null;

  #dragId: NodeId | null = null;
  #drop: Drop | null = null;

  #ops: Promise<void> = Promise.resolve();
  #busy = 0;

  #reset = false;
  #dirtyParents = new Set<NodeId>();
  #dirtyFields = new Set<NodeId>();
  #flushScheduled = false;
  #rebuildScheduled = false;
  #persistTimer = 0;
  #loaded = false;

  /** Structural edits a list read in flight may not show yet (in order). */
  #edits: LocalEdit[] = [];
  /** Placeholder id -> real id. */
  #alias = new Map<string, NodeId>();
  #tempCount = 0;
  /** Orders reload passes against edit confirmations. */
  #seq = 0;
  /** The #seq of every reload pass in flight. */
  #passes = new Set<number>();

  constructor(arbor: Arbor, space: string, scroller: HTMLElement, spacer: HTMLElement) {
    this.arbor = arbor;
    this.space = space;
    this.scroller = scroller;
    this.spacer = spacer;
    this.#expanded = this.#loadExpanded();
    this.#wire();
  }

  // ---------------------------------------------------------------- public

  /** Subscribes to changes, loads ROOT (and the expanded nodes under it) and
   * renders; resolves once the first full render is done. */
  async start(): Promise<void> {
    this.arbor.subscribe((c) => this.#onChanges(c));
    await this.reload(ROOT);
    this.#loaded = true;
    this.#rebuild();
    await this.settled();
    this.#rebuild();
  }

  /** The whole flattened list of visible rows (not just the rendered window). */
  rows(): RowInfo[] {
    return this.#rows.map((r) => ({ id: r.id, depth: r.depth, title: this.#title(r) }));
  }

  /** Saves typed titles now and resolves when no save, load, change batch
   * or queued edit is outstanding. */
  async settled(): Promise<void> {
    for (let i = 0; i < 10_000; i++) {
      if (this.#pending.size > 0) {
        await this.flushSaves();
        await this.#ops;
        if ([...this.#pending.keys()].some((id) => !id.startsWith(TEMP_PREFIX) || this.#alias.has(id))) {
          await new Promise((r) => setTimeout(r, 16));
        }
        continue;
      }
      if (this.#loading.size > 0) {
        await Promise.allSettled([...this.#loading.values()]);
        continue;
      }
      if (this.#busy > 0 || this.#flushScheduled || this.#rebuildScheduled) {
        await new Promise((r) => setTimeout(r, 16));
        continue;
      }
      const ops = this.#ops;
      await ops;
      if (ops === this.#ops && this.#pending.size === 0 && this.#loading.size === 0 && this.#busy === 0 && !this.#flushScheduled && !this.#rebuildScheduled) return;
    }
  }

  isExpanded(id: NodeId): boolean {
    return this.#expanded.has(id);
  }

  expandedIds(): NodeId[] {
    return [...this.#expanded];
  }

  setExpanded(id: NodeId, open: boolean): void {
    if (open === this.#expanded.has(id)) return;
    if (open) this.#expanded.add(id);
    else {
      this.#expanded.delete(id);
      // Focus inside the collapsed subtree goes to the collapsed node.
      if (this.#focusedId && this.#focusedId !== id && this.#isAncestorOrSelf(id, this.#focusedId)) {
        this.#pendingFocus = { id, caret: "end", until: Date.now() + 5000 };
      }
    }
    this.#persistExpanded();
    this.#rebuild();
  }

  toggle(id: NodeId): void {
    this.setExpanded(id, !this.#expanded.has(id));
  }

  /** Scrolls the row into view and focuses its title. */
  focus(id: NodeId, caret: Caret = "end"): void {
    this.#pendingFocus = { id, caret, until: Date.now() + 5000 };
    this.#fulfilFocus();
  }

  /** Scrolls a row into view (no focus). */
  scrollTo(id: NodeId): void {
    const i = this.#index.get(id);
    if (i !== undefined) {
      this.#scrollIntoView(i);
      this.render();
    }
  }

  /** Reloads every loaded list (what a `reset` does). */
  reloadAll(): void {
    const ids = new Set<NodeId>([ROOT, ...this.#lists.keys()]);
    for (const id of ids) void this.reload(id);
    this.onTrashChanged?.();
  }

  /** Appends a new, empty node at the end of ROOT and focuses it at once;
   * resolves to its id once the replica has created it. */
  add(): Promise<NodeId | undefined> {
    return this.#createLocal(ROOT, "last");
  }

  /** Creates an empty sibling right after `id` and focuses it at once. */
  createAfter(id: NodeId): Promise<NodeId | undefined> {
    const row = this.#row(this.#real(id));
    if (!row) return Promise.resolve(undefined);
    return this.#createLocal(row.parent, { after: row.id });
  }

  /** Moves `id` under its previous sibling (as last child) and expands it. */
  indent(id: NodeId): Promise<void> {
    const row = this.#row(this.#real(id));
    if (!row) return Promise.resolve();
    const sibs = this.#lists.get(row.parent);
    const k = sibs ? sibs.findIndex((v) => v.id === row.id) : -1;
    if (!sibs || k <= 0) return Promise.resolve();
    const prev = sibs[k - 1];
    const reload = this.#openForDrop(prev.id, prev.hasChildren);
    const done = this.#structural("Could not indent", { view: row.view, from: row.parent, to: prev.id, pos: "last", resolvedSeq: null }, () =>
      this.arbor.move(this.#must(row.id), this.#must(prev.id), "last"),
    );
    if (reload) void this.reload(prev.id);
    return done.then(() => undefined);
  }

  /** Moves `id` right after its parent, in its grandparent. */
  outdent(id: NodeId): Promise<void> {
    const row = this.#row(this.#real(id));
    if (!row || row.parent === ROOT) return Promise.resolve();
    const parentRow = this.#row(row.parent);
    if (!parentRow) return Promise.resolve();
    const pos: Position = { after: parentRow.id };
    return this.#structural("Could not outdent", { view: row.view, from: row.parent, to: parentRow.parent, pos, resolvedSeq: null }, () =>
      this.arbor.move(this.#must(row.id), this.#must(parentRow.parent), this.#mustPos(pos)),
    ).then(() => undefined);
  }

  /** Moves `id` to `parent` at `pos` (drag and drop); `parent` is expanded.
   * Refuses a move onto the node itself or into its own subtree. */
  move(id: NodeId, parent: NodeId, pos: Position): Promise<void> {
    id = this.#real(id);
    parent = this.#real(parent);
    if (parent === id || this.#isAncestorOrSelf(id, parent)) return Promise.resolve();
    if (typeof pos === "object" && ("before" in pos ? pos.before : pos.after) === id) return Promise.resolve();
    const row = this.#row(id);
    if (!row) {
      // Not on screen (dragged from another tab): just ask the replica.
      return this.#enqueue("Could not move", () => this.arbor.move(this.#must(id), this.#must(parent), this.#mustPos(pos))).then(() => undefined);
    }
    const target = this.#row(parent);
    const reload = target ? this.#openForDrop(parent, target.view.hasChildren) : false;
    const done = this.#structural("Could not move", { view: row.view, from: row.parent, to: parent, pos, resolvedSeq: null }, () =>
      this.arbor.move(this.#must(id), this.#must(parent), this.#mustPos(pos)),
    );
    if (reload) void this.reload(parent);
    return done.then(() => undefined);
  }

  /** Moves `id` to TRASH; with `focusNext`, focus goes to the next row. */
  remove(id: NodeId, focusNext = false): Promise<void> {
    const i = this.#index.get(this.#real(id));
    if (i === undefined) return Promise.resolve();
    const row = this.#rows[i];
    if (focusNext) {
      let j = i + 1;
      while (j < this.#rows.length && this.#rows[j].depth > row.depth) j++;
      const next = j < this.#rows.length ? this.#rows[j].id : i > 0 ? this.#rows[i - 1].id : null;
      if (next) this.#pendingFocus = { id: next, caret: "end", until: Date.now() + 5000 };
    }
    return this.#structural("Could not delete", { view: row.view, from: row.parent, to: TRASH, pos: "last", resolvedSeq: null }, async () => {
      const real = this.#must(row.view.id);
      await this.#saveNow(real);
      await this.arbor.delete(real);
      this.onTrashChanged?.();
    }).then(() => undefined);
  }

  /** Shows a placeholder row right away (focused, so typing goes into it
   * even while the worker is busy), creates the node in the queue and then
   * gives the placeholder the node's real id. */
  #createLocal(parent: NodeId, pos: Position): Promise<NodeId | undefined> {
    const temp = `${TEMP_PREFIX}${++this.#tempCount}`;
    const view: NodeView = { id: temp, fields: { title: "" }, hasChildren: false };
    this.#pendingFocus = { id: temp, caret: "start", until: Date.now() + 5000 };
    return this.#structural("Could not create a node", { view, from: null, to: parent, pos, resolvedSeq: null }, async () => {
      const id = await this.arbor.create(this.#must(parent), this.#mustPos(pos), { title: "" });
      this.#adopt(temp, view, id);
      return id;
    });
  }

  /** Expands `id` for a node about to move into it. If its children are
   * not loaded, it gets an empty list at once (so the moved row stays on
   * screen, with its focus); returns true if that list must then be loaded. */
  #openForDrop(id: NodeId, hasChildren: boolean): boolean {
    if (id === ROOT) return false;
    if (!this.#expanded.has(id)) {
      this.#expanded.add(id);
      this.#persistExpanded();
    }
    if (this.#lists.has(id)) return false;
    this.#lists.set(id, []);
    return hasChildren && !id.startsWith(TEMP_PREFIX);
  }

  /** Applies `edit` locally now, then runs `call` in the queue. On failure
   * the edit is dropped and the lists it touched are read again. */
  #structural<T>(label: string, edit: LocalEdit, call: () => Promise<T>): Promise<T | undefined> {
    this.#edits.push(edit);
    this.#applyEdit(edit, null);
    this.#rebuild();
    return this.#enqueue(label, async () => {
      try {
        const result = await call();
        edit.resolvedSeq = ++this.#seq;
        return result;
      } catch (e) {
        this.#edits = this.#edits.filter((x) => x !== edit);
        for (const p of [edit.from, edit.to]) {
          const real = p === null ? null : this.#real(p);
          if (real && !real.startsWith(TEMP_PREFIX) && this.#lists.has(real)) void this.reload(real);
        }
        if (edit.from === null) {
          this.#pending.delete(edit.view.id);
          this.#applyEdit({ ...edit, from: edit.to, to: TRASH }, null); // drop the placeholder
          this.#rebuild();
        }
        throw e;
      }
    });
  }

  /** Applies `edit` to the loaded lists, or with `only` to that one list
   * (a fresh read of `only`'s children). Idempotent. */
  #applyEdit(edit: LocalEdit, only: { parent: NodeId; list: NodeView[] } | null): void {
    const id = edit.view.id;
    const listOf = (p: NodeId) => (only ? (only.parent === p ? only.list : undefined) : this.#lists.get(p));
    if (edit.from !== null) {
      const list = listOf(this.#real(edit.from));
      const k = list ? list.findIndex((v) => v.id === id) : -1;
      if (list && k >= 0) list.splice(k, 1);
    }
    const to = this.#real(edit.to);
    if (to === TRASH) return;
    const list = listOf(to);
    if (!list) {
      if (!only) {
        const p = this.#row(to);
        if (p) p.view.hasChildren = true;
      }
      return;
    }
    if (list.some((v) => v.id === id)) return;
    let at = list.length;
    const pos = edit.pos;
    if (pos === "first") at = 0;
    else if (typeof pos === "object") {
      const ref = this.#real("before" in pos ? pos.before : pos.after);
      const j = list.findIndex((v) => v.id === ref);
      if (j >= 0) at = "before" in pos ? j : j + 1;
    }
    list.splice(at, 0, edit.view);
  }

  /** Re-applies to a fresh read of `parent`'s children every edit the read
   * may predate (it started before the worker confirmed the edit). */
  #reapplyEdits(parent: NodeId, list: NodeView[], passSeq: number): void {
    for (const edit of this.#edits) {
      if (edit.resolvedSeq !== null && passSeq > edit.resolvedSeq) continue;
      this.#applyEdit(edit, { parent, list });
    }
  }

  /** Forgets confirmed edits that no read in flight can predate. */
  #pruneEdits(): void {
    let min = Infinity;
    for (const p of this.#passes) min = Math.min(min, p);
    this.#edits = this.#edits.filter((e) => e.resolvedSeq === null || e.resolvedSeq >= min);
  }

  /** The placeholder `temp` is now node `id`: rename it everywhere. */
  #adopt(temp: string, view: NodeView, id: NodeId): void {
    this.#alias.set(temp, id);
    view.id = id;
    const r = this.#els.get(temp);
    if (r) {
      this.#els.delete(temp);
      this.#els.set(id, r);
      r.el.dataset.id = id;
    }
    if (this.#focusedId === temp) this.#focusedId = id;
    if (this.#dragId === temp) this.#dragId = id;
    if (this.#pendingFocus?.id === temp) this.#pendingFocus.id = id;
    const list = this.#lists.get(temp);
    if (list) {
      this.#lists.delete(temp);
      this.#lists.set(id, list);
    }
    if (this.#expanded.delete(temp)) {
      this.#expanded.add(id);
      this.#persistExpanded();
    }
    const timer = this.#saveTimers.get(temp);
    if (timer !== undefined) {
      window.clearTimeout(timer);
      this.#saveTimers.delete(temp);
    }
    const typed = this.#pending.get(temp);
    this.#pending.delete(temp);
    if (typed !== undefined) {
      if (!this.#pending.has(id)) this.#pending.set(id, typed);
      void this.#saveNow(id);
    }
    this.#rebuild();
  }

  /** A placeholder's real id once known (other ids map to themselves). */
  #real(id: NodeId): NodeId {
    return this.#alias.get(id) ?? id;
  }

  /** The real id, for a call to the worker. */
  #must(id: NodeId): NodeId {
    const real = this.#real(id);
    if (real.startsWith(TEMP_PREFIX)) throw new Error("it depends on a node that could not be created");
    return real;
  }

  #mustPos(pos: Position): Position {
    if (typeof pos !== "object") return pos;
    return "before" in pos ? { before: this.#must(pos.before) } : { after: this.#must(pos.after) };
  }

  /** Brings a deleted node back (to where it was deleted from). */
  restore(id: NodeId): Promise<void> {
    return this.#enqueue("Could not restore", async () => {
      await this.arbor.restore(id);
      this.onTrashChanged?.();
    });
  }

  /** Saves every title typed but not saved yet. */
  flushSaves(): Promise<void> {
    return Promise.all([...this.#pending.keys()].map((id) => this.#saveNow(id))).then(() => undefined);
  }

  // ---------------------------------------------------------------- loading

  /** (Re)loads `parent`'s whole child list, page by page. Concurrent calls
   * for the same parent coalesce: one more pass runs after the current. */
  reload(parent: NodeId): Promise<void> {
    if (parent.startsWith(TEMP_PREFIX)) return Promise.resolve(); // not created yet: nothing to read
    const running = this.#loading.get(parent);
    if (running) {
      this.#again.add(parent);
      return running;
    }
    const run = (async () => {
      try {
        do {
          this.#again.delete(parent);
          const passSeq = ++this.#seq;
          this.#passes.add(passSeq);
          try {
            const all: NodeView[] = [];
            let after: NodeId | undefined;
            for (;;) {
              const page = await this.arbor.children(parent, { after, limit: PAGE });
              for (const v of page) all.push(v);
              if (page.length < PAGE) break;
              after = page[page.length - 1].id;
            }
            this.#reapplyEdits(parent, all, passSeq);
            this.#lists.set(parent, all);
            this.#scheduleRebuild();
          } catch (e) {
            // A page cursor that moved away mid-load is followed by a change
            // event (and another pass); anything else is worth a toast.
            if (!this.#again.has(parent)) showError(e, "Could not load children");
          } finally {
            this.#passes.delete(passSeq);
            this.#pruneEdits();
          }
        } while (this.#again.has(parent));
      } finally {
        this.#loading.delete(parent);
      }
    })();
    this.#loading.set(parent, run);
    return run;
  }

  #onChanges(c: Changes): void {
    if (c.reset) this.#reset = true;
    for (const p of c.parents) this.#dirtyParents.add(p);
    for (const f of c.fields) this.#dirtyFields.add(f);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    onNextFrame(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    const reset = this.#reset;
    const parents = [...this.#dirtyParents];
    const fields = [...this.#dirtyFields];
    this.#reset = false;
    this.#dirtyParents.clear();
    this.#dirtyFields.clear();
    if (reset) {
      this.reloadAll();
      return;
    }

    const reloading = new Set<NodeId>();
    const probes: NodeId[] = [];
    let trash = false;
    for (const p of parents) {
      if (p === TRASH) trash = true;
      if (this.#lists.has(p) || this.#loading.has(p) || p === ROOT) {
        reloading.add(p);
        void this.reload(p);
      } else if (this.#index.has(p)) {
        probes.push(p); // a collapsed row: only its toggle may change
      }
    }

    for (const p of probes.slice(0, PROBE_MAX)) {
      this.#busy++;
      this.arbor
        .children(p, { limit: 1 })
        .then((page) => {
          const i = this.#index.get(p);
          if (i !== undefined && !this.#lists.has(p)) {
            this.#rows[i].view.hasChildren = page.length > 0;
            this.render();
          }
        })
        .catch(() => {})
        .finally(() => this.#busy--);
    }

    const patch: NodeId[] = [];
    for (const id of fields) {
      const i = this.#index.get(id);
      if (i === undefined) {
        trash = true; // maybe a trashed node's title
        continue;
      }
      if (!reloading.has(this.#rows[i].parent)) patch.push(id);
    }
    if (patch.length > FIELD_PATCH_MAX) {
      for (const id of patch) {
        const p = this.#row(id)?.parent;
        if (p && !reloading.has(p)) {
          reloading.add(p);
          void this.reload(p);
        }
      }
    } else if (patch.length > 0) {
      this.#busy++;
      Promise.all(patch.map((id) => this.arbor.node(id)))
        .then((infos) => {
          infos.forEach((info, k) => {
            const i = this.#index.get(patch[k]);
            if (info && i !== undefined) this.#rows[i].view.fields = info.fields;
          });
          this.render();
        })
        .catch((e) => showError(e, "Could not read changed nodes"))
        .finally(() => this.#busy--);
    }
    if (trash) this.onTrashChanged?.();
  }

  // ---------------------------------------------------------------- model

  #scheduleRebuild(): void {
    if (this.#rebuildScheduled) return;
    this.#rebuildScheduled = true;
    onNextFrame(() => {
      this.#rebuildScheduled = false;
      this.#rebuild();
    });
  }

  /** Flattens the loaded lists into rows (iteratively: trees may be deep),
   * starts loads for expanded nodes that need them, drops lists no longer
   * visible, renders. */
  #rebuild(): void {
    // A focused row that is on screen stays on screen when rows above it
    // come or go.
    const fid = this.#focusedId;
    const oldAt = fid === null ? undefined : this.#index.get(fid);
    let follow = false;
    if (oldAt !== undefined) {
      const y = oldAt * ROW_HEIGHT;
      follow = y + ROW_HEIGHT > this.scroller.scrollTop && y < this.scroller.scrollTop + this.scroller.clientHeight;
    }
    const rows: Row[] = [];
    const index = new Map<NodeId, number>();
    const wanted = new Set<NodeId>([ROOT]);
    const stack: { list: NodeView[]; i: number; depth: number; parent: NodeId }[] = [];
    stack.push({ list: this.#lists.get(ROOT) ?? [], i: 0, depth: 0, parent: ROOT });
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.i >= top.list.length) {
        stack.pop();
        continue;
      }
      const v = top.list[top.i++];
      if (index.has(v.id) || v.id === ROOT || v.id === TRASH) continue;
      index.set(v.id, rows.length);
      rows.push({ id: v.id, depth: top.depth, parent: top.parent, view: v });
      if (!this.#expanded.has(v.id)) continue;
      const list = this.#lists.get(v.id);
      if (list) {
        v.hasChildren = list.length > 0;
        wanted.add(v.id);
        stack.push({ list, i: 0, depth: top.depth + 1, parent: v.id });
      } else if (v.hasChildren) {
        wanted.add(v.id);
        void this.reload(v.id);
      }
    }
    for (const id of [...this.#lists.keys()]) {
      if (!wanted.has(id) && !this.#loading.has(id)) this.#lists.delete(id);
    }
    this.#rows = rows;
    this.#index = index;
    if (follow && fid !== null) {
      const at = index.get(fid);
      if (at !== undefined && at !== oldAt) this.#scrollIntoView(at);
    }
    this.render();
    this.#fulfilFocus();
  }

  #row(id: NodeId): Row | undefined {
    const i = this.#index.get(id);
    return i === undefined ? undefined : this.#rows[i];
  }

  #title(r: Row): string {
    return this.#pending.get(r.id) ?? r.view.fields.title ?? "";
  }

  #hasKids(r: Row): boolean {
    const list = this.#lists.get(r.id);
    return list ? list.length > 0 : r.view.hasChildren;
  }

  /** True if `a` is `b` or one of its ancestors (among visible rows). */
  #isAncestorOrSelf(a: NodeId, b: NodeId): boolean {
    let cur: NodeId | undefined = b;
    for (let guard = 0; cur !== undefined && guard < 100_000; guard++) {
      if (cur === a) return true;
      if (cur === ROOT) return false;
      cur = this.#row(cur)?.parent;
    }
    return false;
  }

  /** Runs structural edits one after another (each sees the previous one
   * applied); a failure shows a toast and resolves to undefined. */
  #enqueue<T>(label: string, fn: () => Promise<T>): Promise<T | undefined> {
    const run = this.#ops.then(fn).catch((e: unknown) => {
      showError(e, label);
      return undefined;
    });
    this.#ops = run.then(() => undefined);
    return run;
  }

  #loadExpanded(): Set<NodeId> {
    try {
      const raw = localStorage.getItem(`arbor-demo:expanded:${this.space}`);
      const ids: unknown = raw ? JSON.parse(raw) : [];
      if (Array.isArray(ids)) return new Set(ids.filter((x): x is string => typeof x === "string"));
    } catch {
      // no localStorage (or garbage in it): start collapsed
    }
    return new Set();
  }

  #persistExpanded(): void {
    window.clearTimeout(this.#persistTimer);
    this.#persistTimer = window.setTimeout(() => {
      try {
        localStorage.setItem(`arbor-demo:expanded:${this.space}`, JSON.stringify([...this.#expanded]));
      } catch {
        // quota or privacy mode: expanded state stays in memory
      }
    }, 300);
  }

  // ---------------------------------------------------------------- titles

  #onTitleInput(id: NodeId, value: string): void {
    this.#pending.set(id, value);
    window.clearTimeout(this.#saveTimers.get(id));
    this.#saveTimers.set(
      id,
      window.setTimeout(() => void this.#saveNow(id), SAVE_DELAY),
    );
  }

  /** Saves `id`'s typed title now (never rejects). */
  #saveNow(id: NodeId): Promise<void> {
    if (id.startsWith(TEMP_PREFIX)) {
      const real = this.#alias.get(id);
      if (!real) return Promise.resolve(); // saved when the create is confirmed
      id = real;
    }
    const t = this.#saveTimers.get(id);
    if (t !== undefined) {
      window.clearTimeout(t);
      this.#saveTimers.delete(id);
    }
    const value = this.#pending.get(id);
    if (value === undefined) return Promise.resolve();
    const inFlight = this.#saving.get(id);
    if (inFlight?.value === value) return inFlight.done;
    const settle = () => {
      if (this.#pending.get(id) === value) this.#pending.delete(id);
      if (this.#saving.get(id) === entry) this.#saving.delete(id);
    };
    const done = this.arbor.set(id, "title", value).then(
      () => {
        const r = this.#row(id);
        if (r) r.view.fields = { ...r.view.fields, title: value };
        settle();
      },
      (e: unknown) => {
        settle();
        showError(e, "Could not rename");
        this.render();
      },
    );
    const entry = { value, done };
    this.#saving.set(id, entry);
    return done;
  }

  // ---------------------------------------------------------------- view

  /** Paints the rows in the viewport (plus overscan, plus the focused and
   * the dragged row wherever they are), removes every other row element and
   * keeps the row elements in display order in the DOM (so `nth()` over
   * [data-testid=row] is the visual order), never moving the focused one. */
  render(): void {
    const rows = this.#rows;
    const height = rows.length * ROW_HEIGHT;
    if (height !== this.#spacerHeight) {
      this.spacer.style.height = `${height}px`;
      this.#spacerHeight = height;
    }
    const top = this.scroller.scrollTop;
    const viewport = this.scroller.clientHeight || window.innerHeight || 800;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + viewport) / ROW_HEIGHT) + OVERSCAN);
    const shown: number[] = [];
    for (let i = first; i < last; i++) shown.push(i);
    for (const id of [this.#focusedId, this.#dragId]) {
      const i = id ? this.#index.get(id) : undefined;
      if (i !== undefined && (i < first || i >= last) && !shown.includes(i)) shown.push(i);
    }
    shown.sort((a, b) => a - b);

    const keep = new Set<NodeId>();
    for (const i of shown) keep.add(rows[i].id);
    for (const [id, r] of this.#els) {
      if (keep.has(id)) continue;
      if (this.#pending.has(id)) void this.#saveNow(id);
      if (this.#focusedId === id) this.#focusedId = null;
      r.el.remove();
      this.#els.delete(id);
    }

    const active = document.activeElement;
    let cur = this.spacer.firstChild;
    for (const i of shown) {
      const el = this.#paint(i);
      if (el === cur) {
        cur = cur.nextSibling;
      } else if (el.parentNode === this.spacer && active instanceof Node && el.contains(active)) {
        // Moving the focused row would blur it: move what is in front of it
        // to the end instead (later rows are placed again below).
        while (cur && cur !== el) {
          const next: ChildNode | null = cur.nextSibling;
          this.spacer.appendChild(cur);
          cur = next;
        }
        cur = el.nextSibling;
      } else {
        this.spacer.insertBefore(el, cur);
      }
    }
    this.scroller.dataset.rows = String(rows.length);
    if (this.#loaded) this.onRender?.(rows.length);
  }

  /** Brings row `i`'s element (created if needed, not inserted) up to date. */
  #paint(i: number): HTMLDivElement {
    const row = this.#rows[i];
    let r = this.#els.get(row.id);
    if (!r) {
      r = this.#createRowEl(row.id);
      this.#els.set(row.id, r);
    }
    const y = i * ROW_HEIGHT;
    if (r.y !== y) {
      r.el.style.transform = `translateY(${y}px)`;
      r.y = y;
    }
    if (r.el.dataset.parent !== row.parent) r.el.dataset.parent = row.parent;
    if (r.depth !== row.depth) {
      r.el.dataset.depth = String(row.depth);
      r.el.setAttribute("aria-level", String(row.depth + 1));
      r.el.style.setProperty("--indent", `${8 + row.depth * INDENT}px`);
      r.depth = row.depth;
    }
    const kids = this.#hasKids(row);
    const open = kids && this.#expanded.has(row.id);
    if (kids !== r.kids) {
      const slot = kids ? this.#createToggle() : this.#createBullet();
      r.slot.replaceWith(slot);
      r.slot = slot;
      r.kids = kids;
      r.open = !open; // force the update below
    }
    if (open !== r.open) {
      r.el.setAttribute("aria-expanded", kids ? String(open) : "false");
      if (kids) {
        r.slot.setAttribute("aria-expanded", String(open));
        r.slot.setAttribute("aria-label", open ? "Collapse" : "Expand");
      }
      r.open = open;
    }
    const title = this.#title(row);
    const input = r.input;
    if (input.value !== title) {
      const focused = document.activeElement === input;
      if (!(focused && this.#pending.has(row.id))) {
        const caret = focused ? input.selectionStart : null;
        input.value = title;
        if (focused && caret !== null) {
          const c = Math.min(caret, title.length);
          input.setSelectionRange(c, c);
        }
      }
    }
    return r.el;
  }

  #createRowEl(id: NodeId): RowEls {
    const el = document.createElement("div");
    el.className = "row";
    el.dataset.testid = "row";
    el.dataset.id = id;
    el.draggable = true;
    el.setAttribute("role", "treeitem");
    const grip = document.createElement("span");
    grip.className = "grip";
    grip.title = "Drag to move";
    grip.setAttribute("aria-hidden", "true");
    const slot = this.#createBullet();
    const input = document.createElement("input");
    input.type = "text";
    input.className = "title";
    input.dataset.testid = "title";
    input.placeholder = "Untitled";
    input.spellcheck = false;
    input.autocomplete = "off";
    input.setAttribute("aria-label", "Title");
    const del = document.createElement("button");
    del.type = "button";
    del.className = "del";
    del.dataset.testid = "delete";
    del.tabIndex = -1;
    del.title = "Delete (Ctrl+Backspace)";
    del.setAttribute("aria-label", "Delete");
    del.textContent = "×";
    el.append(grip, slot, input, del);
    return { el, slot, input, y: -1, depth: -1, kids: false, open: true };
  }

  #createToggle(): HTMLButtonElement {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "toggle";
    b.dataset.testid = "toggle";
    b.tabIndex = -1;
    b.textContent = "▸";
    return b;
  }

  #createBullet(): HTMLSpanElement {
    const s = document.createElement("span");
    s.className = "bullet";
    s.setAttribute("aria-hidden", "true");
    return s;
  }

  #scrollIntoView(i: number): void {
    const top = i * ROW_HEIGHT;
    const bottom = top + ROW_HEIGHT;
    const st = this.scroller.scrollTop;
    const h = this.scroller.clientHeight;
    if (top < st) this.scroller.scrollTop = top;
    else if (bottom > st + h) this.scroller.scrollTop = bottom - h;
  }

  #fulfilFocus(): void {
    const want = this.#pendingFocus;
    if (!want) return;
    if (Date.now() > want.until) {
      this.#pendingFocus = null;
      return;
    }
    const i = this.#index.get(want.id);
    if (i === undefined) return; // not there yet: try again after the next rebuild
    this.#pendingFocus = null;
    this.#scrollIntoView(i);
    this.#focusedId = want.id; // keeps the row rendered even if scrolling lags
    this.render();
    const r = this.#els.get(want.id);
    if (!r) return;
    const input = r.input;
    if (document.activeElement !== input) input.focus({ preventScroll: true });
    const len = input.value.length;
    if (want.caret === "start") input.setSelectionRange(0, 0);
    else if (want.caret === "end") input.setSelectionRange(len, len);
    else if (typeof want.caret === "number") {
      const c = Math.min(want.caret, len);
      input.setSelectionRange(c, c);
    }
  }

  // ---------------------------------------------------------------- events

  #rowOf(target: EventTarget | null): HTMLElement | null {
    return target instanceof Element ? target.closest<HTMLElement>(".row") : null;
  }

  #wire(): void {
    const sc = this.scroller;
    sc.addEventListener("scroll", () => this.render(), { passive: true });
    new ResizeObserver(() => this.render()).observe(sc);

    // Buttons must not steal focus from the title being edited.
    sc.addEventListener("mousedown", (e) => {
      if (e.target instanceof Element && e.target.closest("button")) e.preventDefault();
    });

    sc.addEventListener("click", (e) => {
      const rowEl = this.#rowOf(e.target);
      const id = rowEl?.dataset.id;
      if (!rowEl || !id) return;
      const t = e.target as Element;
      if (t.closest('[data-testid="toggle"]')) this.toggle(id);
      else if (t.closest('[data-testid="delete"]')) void this.remove(id, this.#focusedId === id);
      else if (!t.closest("input")) this.focus(id, "end");
    });

    sc.addEventListener("input", (e) => {
      const t = e.target;
      if (!(t instanceof HTMLInputElement) || !t.classList.contains("title")) return;
      const id = this.#rowOf(t)?.dataset.id;
      if (id) this.#onTitleInput(id, t.value);
    });

    sc.addEventListener("focusin", (e) => {
      const id = this.#rowOf(e.target)?.dataset.id;
      if (id) this.#focusedId = id;
    });

    sc.addEventListener("focusout", (e) => {
      const id = this.#rowOf(e.target)?.dataset.id;
      if (!id) return;
      if (e.target instanceof HTMLInputElement) void this.#saveNow(id);
      if (this.#rowOf(e.relatedTarget)?.dataset.id !== id && this.#focusedId === id) this.#focusedId = null;
    });

    sc.addEventListener("keydown", (e) => this.#onKey(e));

    // Arrow keys with nothing focused enter the outline at the top (or bottom) of the view.
    document.addEventListener("keydown", (e) => {
      if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
      if (e.target !== document.body && e.target !== sc) return;
      if ((e.key !== "ArrowDown" && e.key !== "ArrowUp") || this.#rows.length === 0) return;
      e.preventDefault();
      const firstVisible = Math.ceil(sc.scrollTop / ROW_HEIGHT);
      const lastVisible = Math.floor((sc.scrollTop + sc.clientHeight) / ROW_HEIGHT) - 1;
      const i = e.key === "ArrowDown" ? firstVisible : lastVisible;
      this.focus(this.#rows[Math.max(0, Math.min(this.#rows.length - 1, i))].id);
    });

    sc.addEventListener("dragstart", (e) => this.#onDragStart(e));
    sc.addEventListener("dragover", (e) => this.#onDragOver(e));
    sc.addEventListener("dragleave", (e) => {
      if (!(e.relatedTarget instanceof Node) || !sc.contains(e.relatedTarget)) this.#setDrop(null);
    });
    sc.addEventListener("drop", (e) => this.#onDrop(e));
    sc.addEventListener("dragend", () => this.#endDrag());

    window.addEventListener("beforeunload", () => void this.flushSaves());
  }

  #onKey(e: KeyboardEvent): void {
    const input = e.target;
    if (!(input instanceof HTMLInputElement) || !input.classList.contains("title")) return;
    if (e.isComposing) return;
    const id = this.#rowOf(input)?.dataset.id;
    if (!id) return;
    const mod = e.ctrlKey || e.metaKey;
    switch (e.key) {
      case "Enter":
        e.preventDefault();
        void this.#saveNow(id);
        void this.createAfter(id);
        break;
      case "Tab":
        e.preventDefault();
        void (e.shiftKey ? this.outdent(id) : this.indent(id));
        break;
      case "ArrowUp":
      case "ArrowDown": {
        if (e.altKey || e.shiftKey) return;
        e.preventDefault();
        const down = e.key === "ArrowDown";
        if (mod) {
          this.setExpanded(id, down);
          break;
        }
        const i = this.#index.get(id);
        if (i === undefined) break;
        const j = i + (down ? 1 : -1);
        if (j < 0 || j >= this.#rows.length) break;
        this.focus(this.#rows[j].id, input.selectionStart ?? "end");
        break;
      }
      case "Backspace":
        if (!mod) return;
        e.preventDefault();
        void this.remove(id, true);
        break;
      case "Delete":
        // Delete removes the node unless text is selected (then it deletes the text).
        if (input.selectionStart !== input.selectionEnd) return;
        e.preventDefault();
        void this.remove(id, true);
        break;
      case "Escape":
        input.blur();
        break;
    }
  }

  // ---------------------------------------------------------------- drag and drop

  #onDragStart(e: DragEvent): void {
    const rowEl = this.#rowOf(e.target);
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
      const row = this.#row(id);
      e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData(DRAG_MIME, id);
      e.dataTransfer.setData("text/plain", (row && this.#title(row)) || id);
    }
    rowEl.classList.add("dragging");
  }

  /** What dropping at this point would do, or null if it is not allowed. */
  #dropAt(e: DragEvent): Drop | null {
    const dragId = this.#dragId;
    const rowEl = this.#rowOf(e.target);
    const target = rowEl?.dataset.id;
    if (rowEl && target) {
      const rect = rowEl.getBoundingClientRect();
      const y = rect.height > 0 ? (e.clientY - rect.top) / rect.height : 0.5;
      const kind = y < 0.25 ? "before" : y > 0.75 ? "after" : "inside";
      if (dragId && this.#isAncestorOrSelf(dragId, target)) return null;
      return { kind, target };
    }
    // Below the last row: the end of ROOT.
    const spacerRect = this.spacer.getBoundingClientRect();
    if (e.clientY >= spacerRect.top + this.#rows.length * ROW_HEIGHT) return { kind: "end" };
    return null;
  }

  #onDragOver(e: DragEvent): void {
    const ours = this.#dragId !== null || (e.dataTransfer?.types.includes(DRAG_MIME) ?? false);
    if (!ours) return;
    // Scroll near the edges.
    const rect = this.scroller.getBoundingClientRect();
    if (e.clientY < rect.top + 32) this.scroller.scrollTop -= 12;
    else if (e.clientY > rect.bottom - 32) this.scroller.scrollTop += 12;
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
    const id = this.#dragId ?? e.dataTransfer?.getData(DRAG_MIME) ?? "";
    const drop = this.#dropAt(e);
    this.#endDrag();
    if (!id || !drop) return;
    e.preventDefault();
    if (drop.kind === "end") {
      void this.move(id, ROOT, "last");
      return;
    }
    const target = this.#row(drop.target);
    if (!target || this.#isAncestorOrSelf(id, drop.target)) return;
    if (drop.kind === "inside") void this.move(id, drop.target, "last");
    else void this.move(id, target.parent, drop.kind === "before" ? { before: drop.target } : { after: drop.target });
  }

  #setDrop(drop: Drop | null): void {
    const old = this.#drop;
    const same =
      old === drop ||
      (old !== null && drop !== null && old.kind === drop.kind && (old.kind === "end" || (drop.kind !== "end" && old.target === drop.target)));
    if (same) return;
    for (const el of this.scroller.querySelectorAll(".drop-before, .drop-after, .drop-inside")) {
      el.classList.remove("drop-before", "drop-after", "drop-inside");
    }
    this.scroller.classList.remove("drop-end");
    this.#drop = drop;
    if (!drop) return;
    if (drop.kind === "end") this.scroller.classList.add("drop-end");
    else this.#els.get(drop.target)?.el.classList.add(`drop-${drop.kind}`);
  }

  #endDrag(): void {
    this.#setDrop(null);
    if (this.#dragId) this.#els.get(this.#dragId)?.el.classList.remove("dragging");
    this.#dragId = null;
    this.render();
  }
}
