// The tree edits the outline offers: create, indent, outdent, move, delete and restore.
//
// Each one is shown at once and then made by the worker, in order (see
// edit-queue.ts), and each is one undo step (a create together with the
// title typed into the new row; see undo.ts).

import { type NodeId, type NodeView, type Position, TRASH } from "../src/arbor.js";
import { TEMP_PREFIX } from "./edit-queue.js";
import type { Outline } from "./outline.js";

export class Edits {
  readonly #o: Outline;

  constructor(outline: Outline) {
    this.#o = outline;
  }

  /** Appends a new, empty node at the end of the outline's top and focuses
   * it at once; resolves to its id once the replica has created it. */
  add(): Promise<NodeId | undefined> {
    return this.#createLocal(this.#o.top, "last");
  }

  /** Creates an empty sibling right after `id` and focuses it at once. */
  createAfter(id: NodeId): Promise<NodeId | undefined> {
    const { model, queue } = this.#o;
    const row = model.row(queue.real(id));
    if (!row) return Promise.resolve(undefined);
    return this.#createLocal(row.parent, { after: row.id });
  }

  /** Moves `id` under its previous sibling (as last child) and expands it. */
  indent(id: NodeId): Promise<void> {
    const { arbor, model, queue } = this.#o;
    const row = model.row(queue.real(id));
    if (!row) return Promise.resolve();
    const sibs = model.lists.get(row.parent);
    const k = sibs ? model.indexIn(sibs, row.view) : -1;
    if (!sibs || k <= 0) return Promise.resolve();
    const prev = sibs[k - 1];
    const reload = this.#openForDrop(prev.id, prev.hasChildren);
    const done = this.#o.steps.action(() =>
      queue.structural("Could not indent", { view: row.view, from: row.parent, to: prev.id, pos: "last", resolvedSeq: null }, () =>
        arbor.move(queue.must(row.id), queue.must(prev.id), "last"),
      ),
    );
    if (reload) void this.#o.loader.reload(prev.id);
    return done.then(() => undefined);
  }

  /** Moves `id` right after its parent, in its grandparent (a top-level
   * row stays: the outline's top is as far out as it goes). */
  outdent(id: NodeId): Promise<void> {
    const { arbor, model, queue, top } = this.#o;
    const row = model.row(queue.real(id));
    if (!row || row.parent === top) return Promise.resolve();
    const parentRow = model.row(row.parent);
    if (!parentRow) return Promise.resolve();
    const pos: Position = { after: parentRow.id };
    return this.#o.steps
      .action(() =>
        queue.structural("Could not outdent", { view: row.view, from: row.parent, to: parentRow.parent, pos, resolvedSeq: null }, () =>
          arbor.move(queue.must(row.id), queue.must(parentRow.parent), queue.mustPos(pos)),
        ),
      )
      .then(() => undefined);
  }

  /** Moves `id` to `parent` at `pos` (drag and drop); `parent` is expanded.
   * Refuses a move onto the node itself or into its own subtree. */
  move(id: NodeId, parent: NodeId, pos: Position): Promise<void> {
    const { arbor, model, queue } = this.#o;
    id = queue.real(id);
    parent = queue.real(parent);
    if (parent === id || model.isAncestorOrSelf(id, parent)) return Promise.resolve();
    if (typeof pos === "object" && ("before" in pos ? pos.before : pos.after) === id) return Promise.resolve();
    const row = model.row(id);
    if (!row) {
      // Not on screen (dragged from another tab): just ask the replica.
      return this.#o.steps
        .action(() => queue.enqueue("Could not move", () => arbor.move(queue.must(id), queue.must(parent), queue.mustPos(pos))))
        .then(() => undefined);
    }
    const target = model.row(parent);
    const reload = target ? this.#openForDrop(parent, target.view.hasChildren) : false;
    const done = this.#o.steps.action(() =>
      queue.structural("Could not move", { view: row.view, from: row.parent, to: parent, pos, resolvedSeq: null }, () =>
        arbor.move(queue.must(id), queue.must(parent), queue.mustPos(pos)),
      ),
    );
    if (reload) void this.#o.loader.reload(parent);
    return done.then(() => undefined);
  }

  /** Moves the nodes `ids` (in this order) to `parent` at `pos`, one after
   * the other, as one undo step (a multi-select drag). */
  moveMany(ids: NodeId[], parent: NodeId, pos: Position): Promise<void> {
    const { model, queue } = this.#o;
    parent = queue.real(parent);
    const ref = typeof pos === "object" ? queue.real("before" in pos ? pos.before : pos.after) : null;
    const moving = ids.map((id) => queue.real(id)).filter((id) => id !== ref && !model.isAncestorOrSelf(id, parent));
    return this.#o.steps
      .action(async () => {
        let at = pos;
        const done: Promise<void>[] = [];
        for (const id of moving) {
          done.push(this.move(id, parent, at));
          at = { after: id };
        }
        await Promise.all(done);
      })
      .then(() => undefined);
  }

  /** Moves the nodes `ids` to TRASH as one undo step (a multi-select delete). */
  removeMany(ids: NodeId[]): Promise<void> {
    return this.#o.steps
      .action(async () => {
        await Promise.all(ids.map((id) => this.remove(id)));
      })
      .then(() => undefined);
  }

  /** Moves `id` to TRASH; with `focusNext`, focus goes to the next row. */
  remove(id: NodeId, focusNext = false): Promise<void> {
    const o = this.#o;
    const { model, queue } = o;
    const i = model.pos(queue.real(id));
    if (i === undefined) return Promise.resolve();
    const rows = model.rows;
    const row = rows[i];
    if (focusNext) {
      let j = i + 1;
      while (j < rows.length && rows[j].depth > row.depth) j++;
      const next = j < rows.length ? rows[j].id : i > 0 ? rows[i - 1].id : null;
      if (next) o.rowFocus.want(next, "end");
    }
    return o.steps
      .action(() =>
        queue.structural("Could not delete", { view: row.view, from: row.parent, to: TRASH, pos: "last", resolvedSeq: null }, async () => {
          const real = queue.must(row.view.id);
          await o.titles.saveNow(real);
          await o.arbor.delete(real);
          o.onTrashChanged?.();
        }),
      )
      .then(() => undefined);
  }

  /** Brings a deleted node back (to where it was deleted from). */
  restore(id: NodeId): Promise<void> {
    const o = this.#o;
    return o.steps
      .action(() =>
        o.queue.enqueue("Could not restore", async () => {
          await o.arbor.restore(id);
          o.onTrashChanged?.();
        }),
      )
      .then(() => undefined);
  }

  /** Shows a placeholder row right away (focused, so typing goes into it
   * even while the worker is busy), creates the node in the queue and then
   * gives the placeholder the node's real id. */
  #createLocal(parent: NodeId, pos: Position): Promise<NodeId | undefined> {
    const o = this.#o;
    const { queue } = o;
    const temp = queue.newPlaceholder();
    // Its key is unknown until the worker creates it: the view is unsettled
    // (binary searches step over it) until a read places it by its real key.
    const view: NodeView = { id: temp, key: "", fields: { title: "" }, hasChildren: false };
    o.rowFocus.want(temp, "start");
    // One undo step with the title typed into it: open until the row's
    // editing ends (undo.ts).
    o.steps.beginFor(temp);
    return queue.structural("Could not create a node", { view, from: null, to: parent, pos, resolvedSeq: null }, async () => {
      const id = await o.arbor.create(queue.must(parent), queue.mustPos(pos), { title: "" });
      queue.adopt(temp, view, id);
      return id;
    });
  }

  /** Expands `id` for a node about to move into it. If its children are
   * not loaded, it gets an empty list at once (so the moved row stays on
   * screen, with its focus); returns true if that list must then be loaded. */
  #openForDrop(id: NodeId, hasChildren: boolean): boolean {
    const { model, expanded } = this.#o;
    if (id === this.#o.top) return false;
    expanded.add(id);
    if (model.lists.has(id)) return false;
    model.setList(id, []);
    return hasChildren && !id.startsWith(TEMP_PREFIX);
  }
}
