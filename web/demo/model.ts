// The model cache: the loaded child lists, where each node is, and the flattened visible rows.
//
// `lists` holds the loaded child lists of the outline's top (ROOT, or a
// subtree outline's root) and of every expanded node that is visible, each in sibling order: by (key, id), compared as
// strings; `where` says which loaded list holds a node (and its view);
// `rows` is the depth-first flattening of those lists (the whole visible
// outline, which may be 100k rows long) and `row(id)` finds a node's row.
//
// A view placed by a local edit before its real key is known is
// "unsettled" (see edits.ts): the binary searches step over it.

import { type NodeId, type NodeView, ROOT, TRASH } from "../src/arbor.js";
import type { ExpandedSet } from "./expanded.js";

/** A subtree with more rows than this is placed by flattening all rows again. */
const SPLICE_ROWS_MAX = 5000;

export interface Row {
  id: NodeId;
  depth: number;
  parent: NodeId;
  /** The NodeView object held in the parent's list (shared, patched in place). */
  view: NodeView;
  /** Where the row was last seen in `rows` (a hint: splices shift rows). */
  at: number;
}

/** Which loaded list holds a node, and the node's view in it. */
export interface Loc {
  parent: NodeId;
  view: NodeView;
}

/** What the model asks of whoever loads child lists (the Loader). */
export interface ListLoads {
  /** True while `parent`'s list is being (re)loaded. */
  isLoading(parent: NodeId): boolean;
  /** Starts loading `parent`'s list (it arrives through `setList`). */
  reload(parent: NodeId): Promise<void>;
}

export class Model {
  /** The node whose children are the top-level rows (it has no row). */
  readonly top: NodeId;
  readonly lists = new Map<NodeId, NodeView[]>();
  /** Node id -> its place in the loaded lists. */
  readonly where = new Map<NodeId, Loc>();
  /** Views placed by a local edit whose real key is not known yet. */
  readonly unsettled = new WeakSet<NodeView>();
  /** The lists changed in a way `rows` does not show yet (a rebuild is due). */
  rowsDirty = false;

  readonly #expanded: ExpandedSet;
  readonly #loads: ListLoads;
  #rows: Row[] = [];
  #rowById = new Map<NodeId, Row>();
  /** The read sequence number (see LocalEdits.beginRead) of the last
   * completed reload of each parent's list. */
  #readAt = new Map<NodeId, number>();

  constructor(top: NodeId, expanded: ExpandedSet, loads: ListLoads) {
    this.top = top;
    this.#expanded = expanded;
    this.#loads = loads;
  }

  /** Every visible row, in display order. */
  get rows(): readonly Row[] {
    return this.#rows;
  }

  /** The read sequence number of `parent`'s loaded list, if it was read. */
  readAt(parent: NodeId): number | undefined {
    return this.#readAt.get(parent);
  }

  // ---------------------------------------------------------------- lists

  /** Replaces `parent`'s loaded list; `readSeq` says which read it comes
   * from (none for a list made up locally). */
  setList(parent: NodeId, list: NodeView[], readSeq?: number): void {
    this.#forget(parent);
    this.lists.set(parent, list);
    for (const v of list) this.where.set(v.id, { parent, view: v });
    if (readSeq !== undefined) this.#readAt.set(parent, readSeq);
  }

  /** Drops `parent`'s loaded list. */
  dropList(parent: NodeId): void {
    this.#forget(parent);
    this.lists.delete(parent);
  }

  #forget(parent: NodeId): void {
    this.#readAt.delete(parent);
    const old = this.lists.get(parent);
    if (!old) return;
    for (const v of old) {
      const l = this.where.get(v.id);
      if (l && l.parent === parent) this.where.delete(v.id);
    }
  }

  /** Takes a node out of the loaded list `loc` says has it. */
  listRemove(loc: Loc): void {
    const list = this.lists.get(loc.parent);
    const k = list ? this.indexIn(list, loc.view) : -1;
    if (list && k >= 0) list.splice(k, 1);
    if (this.where.get(loc.view.id) === loc) this.where.delete(loc.view.id);
  }

  /** Where `view` is in `list` (-1 if absent): a binary search, or a scan
   * for an unsettled view. */
  indexIn(list: NodeView[], view: NodeView): number {
    if (!this.unsettled.has(view)) {
      const k = this.lowerBound(list, view.key, view.id);
      if (list[k] === view) return k;
    }
    return list.indexOf(view);
  }

  /** The first index in `list` whose node sorts at or after (key, id),
   * stepping over unsettled views (their keys are not known). */
  lowerBound(list: NodeView[], key: string, id: NodeId): number {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      let m = mid;
      while (m < hi && this.unsettled.has(list[m])) m++;
      if (m === hi) {
        m = mid - 1;
        while (m >= lo && this.unsettled.has(list[m])) m--;
        if (m < lo) return lo; // only unsettled views left: before them
      }
      const v = list[m];
      if (v.key < key || (v.key === key && v.id < id)) lo = m + 1;
      else hi = m;
    }
    return lo;
  }

  /** The placeholder `temp` is now node `id`: its place and its list. */
  rename(temp: NodeId, id: NodeId): void {
    const loc = this.where.get(temp);
    if (loc) {
      this.where.delete(temp);
      this.where.set(id, loc);
    }
    const list = this.lists.get(temp);
    if (list) {
      this.lists.delete(temp);
      this.lists.set(id, list);
      for (const v of list) {
        const l = this.where.get(v.id);
        if (l && l.parent === temp) l.parent = id;
      }
    }
  }

  // ---------------------------------------------------------------- rows

  /** Flattens the loaded lists into rows (iteratively: trees may be deep),
   * starts loads for expanded nodes that need them, drops lists no longer
   * visible. */
  flattenAll(): void {
    const rows: Row[] = [];
    const byId = new Map<NodeId, Row>();
    const wanted = new Set<NodeId>([this.top]);
    this.#flatten(rows, byId, this.lists.get(this.top) ?? [], 0, this.top, wanted);
    for (const id of [...this.lists.keys()]) {
      if (!wanted.has(id) && !this.#loads.isLoading(id)) this.dropList(id);
    }
    this.#rows = rows;
    this.#rowById = byId;
    this.rowsDirty = false;
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
      const kids = this.lists.get(v.id);
      if (kids) {
        v.hasChildren = kids.length > 0;
        wanted?.add(v.id);
        stack.push({ list: kids, i: 0, depth: top.depth + 1, parent: v.id });
      } else if (v.hasChildren) {
        wanted?.add(v.id);
        void this.#loads.reload(v.id);
      }
    }
  }

  /** Splices out the rows of `id` and its open subtree; false if the rows
   * do not match the lists (flatten them all again then). */
  rowsRemove(id: NodeId): boolean {
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
  rowsInsert(view: NodeView, parent: NodeId, at: number): boolean {
    let depth = 0;
    let parentRow: Row | undefined;
    if (parent !== this.top) {
      parentRow = this.#rowById.get(parent);
      if (!parentRow || !this.#expanded.has(parent)) return true; // not on screen
      depth = parentRow.depth + 1;
    }
    const list = this.lists.get(parent);
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
  pruneLists(): void {
    for (const id of [...this.lists.keys()]) {
      if (id === this.top || this.#loads.isLoading(id)) continue;
      if (!this.#rowById.has(id) || !this.#expanded.has(id)) this.dropList(id);
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
  pos(id: NodeId): number | undefined {
    const row = this.#rowById.get(id);
    if (!row) return undefined;
    const i = this.#posOf(row);
    return i < 0 ? undefined : i;
  }

  /** A node's row, if it is on screen (in `rows`). */
  row(id: NodeId): Row | undefined {
    return this.#rowById.get(id);
  }

  hasKids(r: Row): boolean {
    const list = this.lists.get(r.id);
    return list ? list.length > 0 : r.view.hasChildren;
  }

  /** True if `a` is `b` or one of its ancestors (among visible rows, up to
   * the top). */
  isAncestorOrSelf(a: NodeId, b: NodeId): boolean {
    let cur: NodeId | undefined = b;
    for (let guard = 0; cur !== undefined && guard < 100_000; guard++) {
      if (cur === a) return true;
      if (cur === this.top) return false;
      cur = this.row(cur)?.parent;
    }
    return false;
  }
}
