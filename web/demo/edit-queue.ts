// The queue behind structural edits: shown at once, sent to the worker in order, re-applied to reads that predate them.
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

import { type NodeId, type NodeView, type Position, TRASH } from "../src/arbor.js";
import type { Outline } from "./outline.js";
import { showError } from "./ui.js";

/** Placeholder rows (shown before the worker confirms a create) have ids
 * with this prefix until the real id is known. */
export const TEMP_PREFIX = "tmp-";

/** A structural edit made here: applied to the local lists at once, sent
 * to the worker in order, and re-applied to any list read that may predate
 * the worker applying it (so reloads never undo what the user just did). */
export interface LocalEdit {
  /** The node's view (a placeholder's id becomes the real id once created). */
  view: NodeView;
  /** The parent it left; null for a create. */
  from: NodeId | null;
  /** The parent it went to (TRASH for a delete). */
  to: NodeId;
  /** Where among `to`'s children (ids may be placeholders). */
  pos: Position;
  /** The read sequence number when the worker confirmed it; null while queued. */
  resolvedSeq: number | null;
}

export class EditQueue {
  readonly #o: Outline;
  #ops: Promise<void> = Promise.resolve();
  /** Structural edits a list read in flight may not show yet (in order). */
  #edits: LocalEdit[] = [];
  /** Placeholder id -> real id. */
  #alias = new Map<string, NodeId>();
  #tempCount = 0;
  /** Orders reads (reload passes, node reads) against edit confirmations. */
  #seq = 0;
  /** The sequence number of every read in flight. */
  #passes = new Set<number>();

  constructor(outline: Outline) {
    this.#o = outline;
  }

  /** Whether a create is in flight (its placeholder has no real id yet). */
  creating(): boolean {
    return this.#edits.some((e) => e.from === null && e.resolvedSeq === null);
  }

  /** The last queued call (resolves once every call queued so far has run). */
  get tail(): Promise<void> {
    return this.#ops;
  }

  /** Runs structural edits one after another (each sees the previous one
   * applied); a failure shows a toast and resolves to undefined. */
  enqueue<T>(label: string, fn: () => Promise<T>): Promise<T | undefined> {
    const run = this.#ops.then(fn).catch((e: unknown) => {
      showError(e, label);
      return undefined;
    });
    this.#ops = run.then(() => undefined);
    return run;
  }

  // ---------------------------------------------------------------- reads

  /** The next sequence number (orders a `reset` against reads). */
  nextSeq(): number {
    return ++this.#seq;
  }

  /** A read of the replica starts: its sequence number (edits it may
   * predate are kept until `endRead`). */
  beginRead(): number {
    const seq = ++this.#seq;
    this.#passes.add(seq);
    return seq;
  }

  /** The read `seq` is done: forgets confirmed edits no read in flight can predate. */
  endRead(seq: number): void {
    this.#passes.delete(seq);
    let min = Infinity;
    for (const p of this.#passes) min = Math.min(min, p);
    this.#edits = this.#edits.filter((e) => e.resolvedSeq === null || e.resolvedSeq >= min);
  }

  /** The (real) ids of the nodes with an edit that the read `seq` may predate. */
  staleAt(seq: number): Set<NodeId> {
    const stale = new Set<NodeId>();
    for (const e of this.#edits) {
      if (e.resolvedSeq === null || e.resolvedSeq >= seq) stale.add(this.real(e.view.id));
    }
    return stale;
  }

  /** Re-applies to a fresh read of `parent`'s children every edit the read
   * may predate (it started before the worker confirmed the edit). */
  reapply(parent: NodeId, list: NodeView[], passSeq: number): void {
    for (const edit of this.#edits) {
      if (edit.resolvedSeq !== null && passSeq > edit.resolvedSeq) continue;
      this.#applyEdit(edit, { parent, list });
    }
  }

  // ---------------------------------------------------------------- edits

  /** Applies `edit` locally now, then runs `call` in the queue. On failure
   * the edit is dropped and the lists it touched are read again. */
  structural<T>(label: string, edit: LocalEdit, call: () => Promise<T>): Promise<T | undefined> {
    const o = this.#o;
    this.#edits.push(edit);
    this.#applyEdit(edit, null);
    o.rebuild();
    return this.enqueue(label, async () => {
      try {
        const result = await call();
        edit.resolvedSeq = ++this.#seq;
        // Read the node once more now that the worker has it where it goes:
        // that gives an unsettled view its real key (and corrects the view
        // if the worker placed it elsewhere, or ignored the move).
        o.loader.markMoved(this.real(edit.view.id));
        return result;
      } catch (e) {
        this.#edits = this.#edits.filter((x) => x !== edit);
        for (const p of [edit.from, edit.to]) {
          const real = p === null ? null : this.real(p);
          if (real && !real.startsWith(TEMP_PREFIX) && o.model.lists.has(real)) void o.loader.reload(real);
        }
        if (edit.from === null) {
          o.titles.discard(edit.view.id);
          this.#applyEdit({ ...edit, from: edit.to, to: TRASH }, null); // drop the placeholder
          o.rebuild();
        }
        throw e;
      }
    });
  }

  /** Applies `edit` to the loaded lists, or with `only` to that one list
   * (a fresh read of `only`'s children). Idempotent. */
  #applyEdit(edit: LocalEdit, only: { parent: NodeId; list: NodeView[] } | null): void {
    const model = this.#o.model;
    const id = edit.view.id;
    if (only) {
      if (edit.from !== null && this.real(edit.from) === only.parent) {
        const k = only.list.findIndex((v) => v.id === id);
        if (k >= 0) only.list.splice(k, 1);
      }
    } else {
      // Out of whichever loaded list has it now.
      const loc = model.where.get(id);
      if (loc) model.listRemove(loc);
    }
    const to = this.real(edit.to);
    if (to === TRASH) return;
    const list = only ? (only.parent === to ? only.list : undefined) : model.lists.get(to);
    if (!list) {
      if (!only) {
        const p = model.where.get(to);
        if (p) p.view.hasChildren = true;
      }
      return;
    }
    if (list.some((v) => v.id === id)) return;
    let at = list.length;
    const pos = edit.pos;
    if (pos === "first") at = 0;
    else if (typeof pos === "object") {
      const ref = this.real("before" in pos ? pos.before : pos.after);
      const j = list.findIndex((v) => v.id === ref);
      if (j >= 0) at = "before" in pos ? j : j + 1;
    }
    list.splice(at, 0, edit.view);
    model.unsettled.add(edit.view);
    if (!only) model.where.set(id, { parent: to, view: edit.view });
  }

  // ---------------------------------------------------------------- placeholders

  /** A new placeholder id. */
  newPlaceholder(): NodeId {
    return `${TEMP_PREFIX}${++this.#tempCount}`;
  }

  /** The placeholder `temp` is now node `id`: rename it everywhere. */
  adopt(temp: string, view: NodeView, id: NodeId): void {
    const o = this.#o;
    this.#alias.set(temp, id);
    view.id = id;
    o.viewport.rename(temp, id);
    o.rowFocus.rename(temp, id);
    o.dragDrop.rename(temp, id);
    o.model.rename(temp, id);
    o.expanded.rename(temp, id);
    o.titles.rename(temp, id);
    o.rebuild();
  }

  /** The real id of a placeholder the worker created (undefined until then). */
  aliasOf(temp: NodeId): NodeId | undefined {
    return this.#alias.get(temp);
  }

  /** A placeholder's real id once known (other ids map to themselves). */
  real(id: NodeId): NodeId {
    return this.#alias.get(id) ?? id;
  }

  /** The real id, for a call to the worker. */
  must(id: NodeId): NodeId {
    const real = this.real(id);
    if (real.startsWith(TEMP_PREFIX)) throw new Error("it depends on a node that could not be created");
    return real;
  }

  /** `pos` with real ids, for a call to the worker. */
  mustPos(pos: Position): Position {
    if (typeof pos !== "object") return pos;
    return "before" in pos ? { before: this.must(pos.before) } : { after: this.must(pos.after) };
  }
}
