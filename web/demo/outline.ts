// The outline: a virtualized tree view over an Arbor replica.
//
// Model. `lists` holds the loaded child lists of ROOT and of every expanded
// node that is visible, each in sibling order: by (key, id), compared as
// strings; `where` says which loaded list holds a node (and its view);
// `rows` is the depth-first flattening of those lists (the whole visible
// outline, which may be 100k rows long) and `rowById` finds a node's row.
// Only the rows in the viewport (plus an overscan) have DOM elements,
// absolutely positioned inside a spacer as tall as all rows.
//
// Changes events are collected and handled once per animation frame,
// incrementally: every node in `moved` is read with `node(id)` and taken out
// of the loaded list that held it and put into its new parent's loaded list
// (if that is loaded) at its place by (key, id); its rows (its whole visible
// subtree) are spliced out and back in, so a change costs a few small reads,
// whatever the size of the parent. A node whose fields changed gets them
// patched the same way. Only a big batch (a large remote sync) reloads the
// parents' lists (paged, 5000 at a time), and `reset` reloads every list.
//
// Structural edits (create, indent, outdent, drag and drop, delete) apply to
// the local lists at once, so the next keystroke sees them (a create shows
// a focused placeholder row whose id starts with "tmp-" until the worker
// returns the real id). Such a row is "unsettled": its key is not known
// yet, so the binary searches step over it. The worker calls run one after
// another in a queue; an edit is re-applied to any list read that may
// predate it, and a node read that may predate an edit of that node is
// ignored (the edit's own change event, and the read made once the worker
// confirmed it, place the node for good).

import { type Arbor, type Changes, type NodeId, type NodeInfo, type NodeView, type Position, ROOT, TRASH } from "../src/arbor.js";
import { onNextFrame, showError } from "./ui.js";

/** Fixed row height in pixels (matches --row in style.css). */
export const ROW_HEIGHT = 28;
const OVERSCAN = 10;
const PAGE = 5000;
const INDENT = 20;
const SAVE_DELAY = 300;
/** More changed-field nodes than this in one loaded list (and more than
 * 1/200 of it) in one frame: reload that list instead of reading each node. */
const FIELD_PATCH_MAX = 64;
/** More moved nodes than this in one frame (a big remote sync): reload the
 * lists of their parents instead of reading each node. */
const MOVE_PATCH_MAX = 500;
/** More moved nodes than this in one frame: flatten all rows again instead
 * of splicing each node's rows out and in. */
const ROW_SPLICE_MAX = 64;
/** A subtree with more rows than this is placed by flattening all rows again. */
const SPLICE_ROWS_MAX = 5000;
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
  /** Where the row was last seen in `rows` (a hint: splices shift rows). */
  at: number;
}

/** Which loaded list holds a node, and the node's view in it. */
interface Loc {
  parent: NodeId;
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

/** What changed while a list was being reloaded (read again after it). */
interface LoadLog {
  moved: Set<NodeId>;
  fields: Set<NodeId>;
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
  /** Node id -> its place in the loaded lists. */
  #where = new Map<NodeId, Loc>();
  /** Views placed by a local edit whose real key is not known yet. */
  #unsettled = new WeakSet<NodeView>();
  #rows: Row[] = [];
  #rowById = new Map<NodeId, Row>();
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
  #dirtyMoved = new Set<NodeId>();
  #dirtyFields = new Set<NodeId>();
  #flushScheduled = false;
  #rebuildScheduled = false;
  /** The lists changed in a way `rows` does not show yet (a rebuild is due). */
  #rowsDirty = false;
  #persistTimer = 0;
  #loaded = false;

  /** Structural edits a list read in flight may not show yet (in order). */
  #edits: LocalEdit[] = [];
  /** Placeholder id -> real id. */
  #alias = new Map<string, NodeId>();
  #tempCount = 0;
  /** Orders reads (reload passes, node reads) against edit confirmations. */
  #seq = 0;
  /** The #seq of every read in flight. */
  #passes = new Set<number>();
  /** The #seq of the reload pass in flight per parent. */
  #passOf = new Map<NodeId, number>();
  /** The #seq of the last completed reload pass per parent. */
  #readAt = new Map<NodeId, number>();
  /** The #seq when the last `reset` arrived. */
  #resetMark = 0;
  /** One per reload pass in flight. */
  #loadLogs = new Set<LoadLog>();

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
    const i = this.#pos(id);
    if (i !== undefined) {
      this.#scrollIntoView(i);
      this.render();
    }
  }

  /** Reloads every loaded list (what a `reset` does). */
  /** Reloads every loaded list (what a `reset` does), except a list
   * already read (or being read) since the last `reset` arrived: reading
   * 100k children keeps the worker busy for most of a second. */
  reloadAll(): void {
    const ids = new Set<NodeId>([ROOT, ...this.#lists.keys()]);
    for (const id of ids) {
      const since = Math.max(this.#passOf.get(id) ?? 0, this.#readAt.get(id) ?? 0);
      if (this.#resetMark === 0 || since <= this.#resetMark) void this.reload(id);
    }
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
    const k = sibs ? this.#indexIn(sibs, row.view) : -1;
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
    const i = this.#pos(this.#real(id));
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
    // Its key is unknown until the worker creates it: the view is unsettled
    // (binary searches step over it) until a read places it by its real key.
    const view: NodeView = { id: temp, key: "", fields: { title: "" }, hasChildren: false };
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
    this.#setList(id, []);
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
        // Read the node once more now that the worker has it where it goes:
        // that gives an unsettled view its real key (and corrects the view
        // if the worker placed it elsewhere, or ignored the move).
        this.#markMoved(this.#real(edit.view.id));
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
    if (only) {
      if (edit.from !== null && this.#real(edit.from) === only.parent) {
        const k = only.list.findIndex((v) => v.id === id);
        if (k >= 0) only.list.splice(k, 1);
      }
    } else {
      // Out of whichever loaded list has it now.
      const loc = this.#where.get(id);
      if (loc) this.#listRemove(loc);
    }
    const to = this.#real(edit.to);
    if (to === TRASH) return;
    const list = only ? (only.parent === to ? only.list : undefined) : this.#lists.get(to);
    if (!list) {
      if (!only) {
        const p = this.#where.get(to);
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
    this.#unsettled.add(edit.view);
    if (!only) this.#where.set(id, { parent: to, view: edit.view });
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
    const loc = this.#where.get(temp);
    if (loc) {
      this.#where.delete(temp);
      this.#where.set(id, loc);
    }
    const list = this.#lists.get(temp);
    if (list) {
      this.#lists.delete(temp);
      this.#lists.set(id, list);
      for (const v of list) {
        const l = this.#where.get(v.id);
        if (l && l.parent === temp) l.parent = id;
      }
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
          this.#passOf.set(parent, passSeq);
          // Changes handled while the pages are read may be missing from
          // them (or be undone by them): those nodes are read again after.
          const log: LoadLog = { moved: new Set(), fields: new Set() };
          this.#loadLogs.add(log);
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
            this.#setList(parent, all);
            this.#readAt.set(parent, passSeq);
            this.#scheduleRebuild();
          } catch (e) {
            // A page cursor that moved away mid-load is followed by a change
            // event (and another pass); anything else is worth a toast.
            if (!this.#again.has(parent)) showError(e, "Could not load children");
          } finally {
            this.#passes.delete(passSeq);
            this.#pruneEdits();
            this.#loadLogs.delete(log);
            if (log.moved.size > 0 || log.fields.size > 0) {
              for (const id of log.moved) this.#dirtyMoved.add(id);
              for (const id of log.fields) this.#dirtyFields.add(id);
              this.#scheduleFlush();
            }
          }
        } while (this.#again.has(parent));
      } finally {
        this.#loading.delete(parent);
        this.#passOf.delete(parent);
      }
    })();
    this.#loading.set(parent, run);
    return run;
  }

  #onChanges(c: Changes): void {
    if (c.reset) {
      this.#reset = true;
      this.#resetMark = ++this.#seq;
    }
    for (const p of c.parents) this.#dirtyParents.add(p);
    for (const m of c.moved) this.#dirtyMoved.add(m);
    for (const f of c.fields) this.#dirtyFields.add(f);
    this.#scheduleFlush();
  }

  /** Reads `id` again at the next flush (as if it had moved). */
  #markMoved(id: NodeId): void {
    if (id.startsWith(TEMP_PREFIX)) return;
    this.#dirtyMoved.add(id);
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
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
    const moved = [...this.#dirtyMoved];
    const fields = [...this.#dirtyFields];
    this.#reset = false;
    this.#dirtyParents.clear();
    this.#dirtyMoved.clear();
    this.#dirtyFields.clear();
    if (reset) {
      this.reloadAll();
      return;
    }
    const trash = parents.includes(TRASH);
    if (moved.length > MOVE_PATCH_MAX) this.#reloadParents(parents, fields);
    else this.#readChanged(parents, moved, fields);
    if (trash) this.onTrashChanged?.();
  }

  /** After a big batch: reloads the loaded lists of the changed parents,
   * probes collapsed rows, patches the fields of the other nodes. */
  #reloadParents(parents: NodeId[], fields: NodeId[]): void {
    const reloading = new Set<NodeId>();
    const probes: NodeId[] = [];
    for (const p of parents) {
      if (this.#lists.has(p) || this.#loading.has(p) || p === ROOT) {
        reloading.add(p);
        void this.reload(p);
      } else if (this.#where.has(p)) {
        probes.push(p); // a collapsed row: only its toggle may change
      }
    }
    this.#probe(probes);
    const rest = fields.filter((id) => {
      const loc = this.#where.get(id);
      return !loc || !reloading.has(loc.parent);
    });
    this.#readChanged([], [], rest);
  }

  /** The incremental path: reads every moved node and every node whose
   * fields changed (one `node()` call each, all queued at once), then
   * places the moved ones and patches the fields. */
  #readChanged(parents: NodeId[], moved: NodeId[], fields: NodeId[]): void {
    // Reloads in flight may predate these changes: they read them again.
    for (const log of this.#loadLogs) {
      for (const id of moved) log.moved.add(id);
      for (const id of fields) log.fields.add(id);
    }
    const isMoved = new Set(moved);
    const patch: NodeId[] = [];
    const perList = new Map<NodeId, NodeId[]>();
    let trash = false;
    for (const id of fields) {
      if (isMoved.has(id)) continue; // read anyway
      const loc = this.#where.get(id);
      if (!loc) {
        trash = true; // maybe a trashed node's title
        continue;
      }
      let group = perList.get(loc.parent);
      if (!group) perList.set(loc.parent, (group = []));
      group.push(id);
    }
    for (const [p, group] of perList) {
      // Many changed titles in one list: reading the list is cheaper.
      const size = this.#lists.get(p)?.length ?? 0;
      if (group.length > FIELD_PATCH_MAX && group.length * 200 > size) void this.reload(p);
      else for (const id of group) patch.push(id);
    }
    if (trash) this.onTrashChanged?.();
    if (moved.length === 0 && patch.length === 0) {
      this.#afterPlacing(parents, new Set(), []);
      return;
    }
    const ids = [...moved, ...patch];
    const seq = ++this.#seq;
    this.#passes.add(seq);
    this.#busy++;
    Promise.all(ids.map((id) => this.arbor.node(id).then((info) => ({ info }), (e: unknown) => ({ error: e }))))
      .then((reads) => {
        const failed = reads.find((r): r is { error: unknown } => "error" in r);
        if (failed) {
          // The replica could not answer (a snapshot is loading): read the
          // lists instead.
          for (const p of new Set<NodeId>([ROOT, ...this.#lists.keys()])) void this.reload(p);
          return;
        }
        const infos = reads.map((r) => ("info" in r ? r.info : null));
        this.#place(moved, infos.slice(0, moved.length), seq, parents);
        let patched = false;
        for (let k = moved.length; k < ids.length; k++) {
          const info = infos[k];
          const loc = this.#where.get(ids[k]);
          if (info && loc) {
            loc.view.fields = info.fields;
            patched = true;
          }
        }
        if (patched) this.render();
      })
      .catch((e: unknown) => showError(e, "Could not read changed nodes"))
      .finally(() => {
        this.#passes.delete(seq);
        this.#pruneEdits();
        this.#busy--;
      });
  }

  /** Places every moved node where the worker says it is now: out of the
   * loaded list that had it, into its new parent's loaded list at its
   * (key, id) place; its rows follow (spliced, or all flattened again for
   * a bigger batch). A node with an edit this read may predate is left
   * where the edit put it. */
  #place(ids: NodeId[], infos: (NodeInfo | null)[], seq: number, parents: NodeId[]): void {
    const stale = new Set<NodeId>();
    for (const e of this.#edits) {
      if (e.resolvedSeq === null || e.resolvedSeq >= seq) stale.add(this.#real(e.view.id));
    }
    let splice = !this.#rowsDirty && ids.length <= ROW_SPLICE_MAX;
    const anchor = this.#focusAnchor();
    const gained = new Set<NodeId>();
    const fresh: NodeView[] = [];
    let changed = false;
    let patched = false;
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      const info = infos[k];
      const loc = this.#where.get(id);
      if (loc && info) {
        loc.view.fields = info.fields;
        patched = true;
      }
      if (stale.has(id)) continue;
      const to = info && !info.deleted && info.parent !== null && info.key !== null ? info.parent : null;
      const key = info?.key ?? "";
      if (loc && loc.parent === to && loc.view.key === key && !this.#unsettled.has(loc.view)) continue; // where it is
      changed = true;
      let view: NodeView | undefined;
      if (loc) {
        view = loc.view;
        this.#listRemove(loc);
        if (splice && !this.#rowsRemove(id)) splice = false;
      }
      if (to === null || !info) continue;
      gained.add(to);
      const list = this.#lists.get(to);
      if (!list) continue; // not loaded: its row (if any) just gets a toggle
      if (!view) {
        const own = this.#lists.get(id);
        view = { id, key, fields: info.fields, hasChildren: own ? own.length > 0 : false };
        if (!own) fresh.push(view); // whether it has children is read below
      }
      view.key = key;
      view.fields = info.fields;
      this.#unsettled.delete(view);
      const at = this.#lowerBound(list, key, id);
      list.splice(at, 0, view);
      this.#where.set(id, { parent: to, view });
      if (splice && !this.#rowsInsert(view, to, at)) splice = false;
    }
    if (changed) {
      if (splice) {
        this.#pruneLists();
        this.#follow(anchor);
        this.render();
        this.#fulfilFocus();
      } else {
        this.#rebuild();
      }
    } else if (patched) {
      this.render();
    }
    this.#afterPlacing(parents, gained, fresh);
  }

  /** Brings the toggles of changed parents up to date: a parent that
   * gained a child has children; a parent whose list is loaded knows; any
   * other one on screen (and every newly seen node) is asked. */
  #afterPlacing(parents: NodeId[], gained: Set<NodeId>, fresh: NodeView[]): void {
    let repaint = false;
    const probes: NodeId[] = [];
    for (const p of new Set([...parents, ...gained])) {
      if (p === ROOT || p === TRASH) continue;
      const loc = this.#where.get(p);
      const list = this.#lists.get(p);
      if (list) {
        if (loc) loc.view.hasChildren = list.length > 0;
        repaint = true;
      } else if (gained.has(p)) {
        if (loc) {
          loc.view.hasChildren = true;
          repaint = true;
          this.#loadIfOpen(p);
        }
      } else if (loc) {
        probes.push(p); // it may have lost its last child
      }
    }
    for (const v of fresh) probes.push(v.id);
    this.#probe(probes);
    if (repaint) this.render();
  }

  /** Asks whether each node has children (for its toggle). */
  #probe(ids: NodeId[]): void {
    for (const p of ids.slice(0, PROBE_MAX)) {
      this.#busy++;
      this.arbor
        .children(p, { limit: 1 })
        .then((page) => {
          const loc = this.#where.get(p);
          if (loc && !this.#lists.has(p)) {
            loc.view.hasChildren = page.length > 0;
            if (page.length > 0) this.#loadIfOpen(p);
            this.render();
          }
        })
        .catch(() => {})
        .finally(() => this.#busy--);
    }
  }

  /** An expanded row on screen that just got children loads them. */
  #loadIfOpen(id: NodeId): void {
    if (this.#expanded.has(id) && this.#rowById.has(id) && !this.#lists.has(id)) void this.reload(id);
  }

  // ---------------------------------------------------------------- lists

  /** Replaces `parent`'s loaded list. */
  #setList(parent: NodeId, list: NodeView[]): void {
    this.#forget(parent);
    this.#lists.set(parent, list);
    for (const v of list) this.#where.set(v.id, { parent, view: v });
  }

  /** Drops `parent`'s loaded list. */
  #dropList(parent: NodeId): void {
    this.#forget(parent);
    this.#lists.delete(parent);
  }

  #forget(parent: NodeId): void {
    this.#readAt.delete(parent);
    const old = this.#lists.get(parent);
    if (!old) return;
    for (const v of old) {
      const l = this.#where.get(v.id);
      if (l && l.parent === parent) this.#where.delete(v.id);
    }
  }

  /** Takes a node out of the loaded list `loc` says has it. */
  #listRemove(loc: Loc): void {
    const list = this.#lists.get(loc.parent);
    const k = list ? this.#indexIn(list, loc.view) : -1;
    if (list && k >= 0) list.splice(k, 1);
    if (this.#where.get(loc.view.id) === loc) this.#where.delete(loc.view.id);
  }

  /** Where `view` is in `list` (-1 if absent): a binary search, or a scan
   * for an unsettled view. */
  #indexIn(list: NodeView[], view: NodeView): number {
    if (!this.#unsettled.has(view)) {
      const k = this.#lowerBound(list, view.key, view.id);
      if (list[k] === view) return k;
    }
    return list.indexOf(view);
  }

  /** The first index in `list` whose node sorts at or after (key, id),
   * stepping over unsettled views (their keys are not known). */
  #lowerBound(list: NodeView[], key: string, id: NodeId): number {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      let m = mid;
      while (m < hi && this.#unsettled.has(list[m])) m++;
      if (m === hi) {
        m = mid - 1;
        while (m >= lo && this.#unsettled.has(list[m])) m--;
        if (m < lo) return lo; // only unsettled views left: before them
      }
      const v = list[m];
      if (v.key < key || (v.key === key && v.id < id)) lo = m + 1;
      else hi = m;
    }
    return lo;
  }

  // ---------------------------------------------------------------- model

  #scheduleRebuild(): void {
    this.#rowsDirty = true;
    if (this.#rebuildScheduled) return;
    this.#rebuildScheduled = true;
    onNextFrame(() => {
      this.#rebuildScheduled = false;
      if (this.#rowsDirty) this.#rebuild();
    });
  }

  /** Flattens the loaded lists into rows (iteratively: trees may be deep),
   * starts loads for expanded nodes that need them, drops lists no longer
   * visible, renders. */
  #rebuild(): void {
    // A focused row that is on screen stays on screen when rows above it
    // come or go.
    const anchor = this.#focusAnchor();
    const rows: Row[] = [];
    const byId = new Map<NodeId, Row>();
    const wanted = new Set<NodeId>([ROOT]);
    this.#flatten(rows, byId, this.#lists.get(ROOT) ?? [], 0, ROOT, wanted);
    for (const id of [...this.#lists.keys()]) {
      if (!wanted.has(id) && !this.#loading.has(id)) this.#dropList(id);
    }
    this.#rows = rows;
    this.#rowById = byId;
    this.#rowsDirty = false;
    this.#follow(anchor);
    this.render();
    this.#fulfilFocus();
  }

  /** Appends to `out` the rows of the nodes in `list` (at `depth`, under
   * `parent`) and of their open subtrees, skipping nodes `byId` has; starts
   * loads for expanded nodes that need them. */
  #flatten(out: Row[], byId: Map<NodeId, Row>, list: NodeView[], depth: number, parent: NodeId, wanted: Set<NodeId> | null): void {
    const stack: { list: NodeView[]; i: number; depth: number; parent: NodeId }[] = [{ list, i: 0, depth, parent }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.i >= top.list.length) {
        stack.pop();
        continue;
      }
      const v = top.list[top.i++];
      if (byId.has(v.id) || v.id === ROOT || v.id === TRASH) continue;
      const row: Row = { id: v.id, depth: top.depth, parent: top.parent, view: v, at: out.length };
      byId.set(v.id, row);
      out.push(row);
      if (!this.#expanded.has(v.id)) continue;
      const kids = this.#lists.get(v.id);
      if (kids) {
        v.hasChildren = kids.length > 0;
        wanted?.add(v.id);
        stack.push({ list: kids, i: 0, depth: top.depth + 1, parent: v.id });
      } else if (v.hasChildren) {
        wanted?.add(v.id);
        void this.reload(v.id);
      }
    }
  }

  /** Splices out the rows of `id` and its open subtree; false if the rows
   * do not match the lists (flatten them all again then). */
  #rowsRemove(id: NodeId): boolean {
    const row = this.#rowById.get(id);
    if (!row) return true; // not on screen
    const rows = this.#rows;
    const i = this.#posOf(row);
    if (i < 0) return false;
    let j = i + 1;
    while (j < rows.length && rows[j].depth > row.depth) j++;
    for (const r of rows.splice(i, j - i)) {
      if (this.#rowById.get(r.id) === r) this.#rowById.delete(r.id);
    }
    return true;
  }

  /** Splices in the rows of `view` (just put at `at` in `parent`'s list)
   * and of its open subtree, if `parent`'s children are on screen; false
   * if the rows do not match the lists (flatten them all again then). */
  #rowsInsert(view: NodeView, parent: NodeId, at: number): boolean {
    let depth = 0;
    let parentRow: Row | undefined;
    if (parent !== ROOT) {
      parentRow = this.#rowById.get(parent);
      if (!parentRow || !this.#expanded.has(parent)) return true; // not on screen
      depth = parentRow.depth + 1;
    }
    const list = this.#lists.get(parent);
    if (!list || list[at] !== view) return false;
    const rows = this.#rows;
    let pos: number;
    if (at > 0) {
      // Right after the previous sibling's subtree.
      const prev = this.#rowById.get(list[at - 1].id);
      if (!prev || prev.view !== list[at - 1]) return false;
      pos = this.#posOf(prev);
      if (pos < 0) return false;
      pos++;
      while (pos < rows.length && rows[pos].depth > prev.depth) pos++;
    } else if (parentRow) {
      pos = this.#posOf(parentRow);
      if (pos < 0) return false;
      pos++;
    } else {
      pos = 0;
    }
    const added: Row[] = [];
    this.#flatten(added, this.#rowById, [view], depth, parent, null);
    if (added.length > SPLICE_ROWS_MAX) return false;
    rows.splice(pos, 0, ...added);
    for (let k = 0; k < added.length; k++) added[k].at = pos + k;
    return true;
  }

  /** Drops the loaded lists no longer on screen (after splicing rows). */
  #pruneLists(): void {
    for (const id of [...this.#lists.keys()]) {
      if (id === ROOT || this.#loading.has(id)) continue;
      if (!this.#rowById.has(id) || !this.#expanded.has(id)) this.#dropList(id);
    }
  }

  /** A row's index in `rows` (-1 if it is not there). */
  #posOf(row: Row): number {
    if (this.#rows[row.at] === row) return row.at;
    const i = this.#rows.indexOf(row);
    row.at = i;
    return i;
  }

  /** A node's row index, if it is on screen (in `rows`). */
  #pos(id: NodeId): number | undefined {
    const row = this.#rowById.get(id);
    if (!row) return undefined;
    const i = this.#posOf(row);
    return i < 0 ? undefined : i;
  }

  /** The focused row, if it is in the viewport (so it can stay there). */
  #focusAnchor(): { id: NodeId; at: number } | null {
    const fid = this.#focusedId;
    const at = fid === null ? undefined : this.#pos(fid);
    if (fid === null || at === undefined) return null;
    const y = at * ROW_HEIGHT;
    const visible = y + ROW_HEIGHT > this.scroller.scrollTop && y < this.scroller.scrollTop + this.scroller.clientHeight;
    return visible ? { id: fid, at } : null;
  }

  /** Keeps the anchor's row in view if rows above it came or went. */
  #follow(anchor: { id: NodeId; at: number } | null): void {
    if (!anchor) return;
    const at = this.#pos(anchor.id);
    if (at !== undefined && at !== anchor.at) this.#scrollIntoView(at);
  }

  #row(id: NodeId): Row | undefined {
    return this.#rowById.get(id);
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
        const loc = this.#where.get(id);
        if (loc) loc.view.fields = { ...loc.view.fields, title: value };
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
      const i = id ? this.#pos(id) : undefined;
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
    const i = this.#pos(want.id);
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
        const i = this.#pos(id);
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
