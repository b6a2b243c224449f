// Keeps the model in step with the replica: loads child lists and applies change events to them.
//
// Changes events are collected and handled once per animation frame,
// incrementally: every node in `moved` is read with `node(id)` (or taken
// from the event's own `nodes`, for a change of a few nodes) and taken out
// of the loaded list that held it and put into its new parent's loaded list
// (if that is loaded) at its place by (key, id); its rows (its whole visible
// subtree) are spliced out and back in, so a change costs a few small reads,
// whatever the size of the parent. A node whose fields changed gets them
// patched the same way. Only a big batch (a large remote sync) reloads the
// parents' lists (paged, 5000 at a time), and `reset` reloads every list.

import { type Changes, type NodeId, type NodeInfo, type NodeView, TRASH } from "../src/arbor.js";
import { TEMP_PREFIX } from "./edit-queue.js";
import type { ListLoads } from "./model.js";
import type { Outline } from "./outline.js";
import { onNextFrame, showError } from "./ui.js";

const PAGE = 5000;
/** More changed-field nodes than this in one loaded list (and more than
 * 1/200 of it) in one frame: reload that list instead of reading each node. */
const FIELD_PATCH_MAX = 64;
/** More moved nodes than this in one frame (a big remote sync): reload the
 * lists of their parents instead of reading each node. */
const MOVE_PATCH_MAX = 500;
/** More moved nodes than this in one frame: flatten all rows again instead
 * of splicing each node's rows out and in. */
const ROW_SPLICE_MAX = 64;
/** At most this many hasChildren probes per frame. */
const PROBE_MAX = 256;

/** What changed while a list was being reloaded (read again after it). */
interface LoadLog {
  moved: Set<NodeId>;
  fields: Set<NodeId>;
}

export class Loader implements ListLoads {
  readonly #o: Outline;
  #loading = new Map<NodeId, Promise<void>>();
  #again = new Set<NodeId>();
  /** Reads of changed nodes and probes in flight. */
  #busy = 0;

  #reset = false;
  #dirtyParents = new Set<NodeId>();
  #dirtyMoved = new Set<NodeId>();
  #dirtyFields = new Set<NodeId>();
  #flushScheduled = false;

  /** The read sequence number of the reload pass in flight per parent. */
  #passOf = new Map<NodeId, number>();
  /** The read sequence number when the last `reset` arrived. */
  #resetMark = 0;
  /** One per reload pass in flight. */
  #loadLogs = new Set<LoadLog>();
  /** Node data the change events carried (`Changes.nodes`), the newest per
   * node, until a flush uses it: such a node is not read back. (Every
   * change sends an event before any later reply, so this is never older
   * than what a read would return.) */
  #known = new Map<NodeId, NodeInfo | null>();
  /** The same for nodes whose fields alone changed (`Changes.values`). */
  #knownFields = new Map<NodeId, Record<string, string>>();

  constructor(outline: Outline) {
    this.#o = outline;
  }

  /** True while a read of changed nodes, a probe or a change batch is
   * outstanding (list loads: see `loads`). */
  get busy(): boolean {
    return this.#busy > 0 || this.#flushScheduled;
  }

  /** The list loads in flight (empty if none). */
  loads(): Promise<void>[] {
    return [...this.#loading.values()];
  }

  isLoading(parent: NodeId): boolean {
    return this.#loading.has(parent);
  }

  /** (Re)loads `parent`'s whole child list, page by page. Concurrent calls
   * for the same parent coalesce: one more pass runs after the current. */
  reload(parent: NodeId): Promise<void> {
    if (parent.startsWith(TEMP_PREFIX)) return Promise.resolve(); // not created yet: nothing to read
    const running = this.#loading.get(parent);
    if (running) {
      this.#again.add(parent);
      return running;
    }
    const { arbor, model, queue } = this.#o;
    const run = (async () => {
      try {
        do {
          this.#again.delete(parent);
          const passSeq = queue.beginRead();
          this.#passOf.set(parent, passSeq);
          // Changes handled while the pages are read may be missing from
          // them (or be undone by them): those nodes are read again after.
          const log: LoadLog = { moved: new Set(), fields: new Set() };
          this.#loadLogs.add(log);
          try {
            const all: NodeView[] = [];
            let after: NodeId | undefined;
            for (;;) {
              const page = await arbor.children(parent, { after, limit: PAGE });
              for (const v of page) all.push(v);
              if (page.length < PAGE) break;
              after = page[page.length - 1].id;
            }
            queue.reapply(parent, all, passSeq);
            model.setList(parent, all, passSeq);
            this.#o.scheduleRebuild();
          } catch (e) {
            // A page cursor that moved away mid-load is followed by a change
            // event (and another pass); anything else is worth a toast.
            if (!this.#again.has(parent)) showError(e, "Could not load children");
          } finally {
            queue.endRead(passSeq);
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

  /** Reloads every loaded list (what a `reset` does), except a list
   * already read (or being read) since the last `reset` arrived: reading
   * 100k children keeps the worker busy for most of a second. */
  reloadAll(): void {
    const ids = new Set<NodeId>([this.#o.top, ...this.#o.model.lists.keys()]);
    for (const id of ids) {
      const since = Math.max(this.#passOf.get(id) ?? 0, this.#o.model.readAt(id) ?? 0);
      if (this.#resetMark === 0 || since <= this.#resetMark) void this.reload(id);
    }
    this.#o.onTrashChanged?.();
  }

  /** Takes a batch of change events (handled at the next frame). */
  onChanges(c: Changes): void {
    if (c.reset) {
      this.#reset = true;
      this.#resetMark = this.#o.queue.nextSeq();
      this.#known.clear();
      this.#knownFields.clear();
    }
    for (const id of c.moved) {
      const info = c.nodes?.[id];
      if (info === undefined) this.#known.delete(id);
      else this.#known.set(id, info);
    }
    const moved = new Set(c.moved);
    for (const id of c.fields) {
      if (moved.has(id)) continue; // in `nodes`, fields and all
      const fields = c.values?.[id];
      const had = this.#known.get(id);
      if (fields === undefined) {
        this.#known.delete(id);
        this.#knownFields.delete(id);
      } else if (had) this.#known.set(id, { ...had, fields });
      else this.#knownFields.set(id, fields);
    }
    for (const p of c.parents) this.#dirtyParents.add(p);
    for (const m of c.moved) this.#dirtyMoved.add(m);
    for (const f of c.fields) this.#dirtyFields.add(f);
    this.#scheduleFlush();
  }

  /** Reads `id` again at the next flush (as if it had moved). */
  markMoved(id: NodeId): void {
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
    // A create's change event comes before its call answers (the call
    // answers once the edit is saved): placing the new node now would show
    // it next to its placeholder. Wait for the queue, keeping the changes.
    if (this.#o.queue.creating()) {
      void this.#o.queue.tail.then(() => this.#scheduleFlush());
      return;
    }
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
    // Used by the reads above (taken at once), or for nodes not shown.
    this.#known.clear();
    this.#knownFields.clear();
    if (trash) this.#o.onTrashChanged?.();
  }

  /** After a big batch: reloads the loaded lists of the changed parents,
   * probes collapsed rows, patches the fields of the other nodes. */
  #reloadParents(parents: NodeId[], fields: NodeId[]): void {
    const { model } = this.#o;
    const reloading = new Set<NodeId>();
    const probes: NodeId[] = [];
    for (const p of parents) {
      if (model.lists.has(p) || this.#loading.has(p) || p === this.#o.top) {
        reloading.add(p);
        void this.reload(p);
      } else if (model.where.has(p)) {
        probes.push(p); // a collapsed row: only its toggle may change
      }
    }
    this.#probe(probes);
    const rest = fields.filter((id) => {
      const loc = model.where.get(id);
      return !loc || !reloading.has(loc.parent);
    });
    this.#readChanged([], [], rest);
  }

  /** The incremental path: reads every moved node and every node whose
   * fields changed (one `node()` call each, all queued at once), then
   * places the moved ones and patches the fields. */
  #readChanged(parents: NodeId[], moved: NodeId[], fields: NodeId[]): void {
    const o = this.#o;
    const { model, queue } = o;
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
      const loc = model.where.get(id);
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
      const size = model.lists.get(p)?.length ?? 0;
      if (group.length > FIELD_PATCH_MAX && group.length * 200 > size) void this.reload(p);
      else for (const id of group) patch.push(id);
    }
    if (trash) o.onTrashChanged?.();
    if (moved.length === 0 && patch.length === 0) {
      this.#afterPlacing(parents, new Set(), []);
      return;
    }
    const ids = [...moved, ...patch];
    const seq = queue.beginRead();
    this.#busy++;
    // What the change events carried, else a read: a moved node's whole
    // info, a patched node's fields.
    const read = (id: NodeId, k: number): Promise<{ info: Pick<NodeInfo, "fields"> | null } | { error: unknown }> => {
      const info = this.#known.get(id);
      if (info !== undefined) return Promise.resolve({ info });
      const fields = k >= moved.length ? this.#knownFields.get(id) : undefined;
      if (fields !== undefined) return Promise.resolve({ info: { fields } });
      return o.arbor.node(id).then((info) => ({ info }), (e: unknown) => ({ error: e }));
    };
    Promise.all(ids.map(read))
      .then((reads) => {
        const failed = reads.find((r): r is { error: unknown } => "error" in r);
        if (failed) {
          // The replica could not answer (a snapshot is loading): read the
          // lists instead.
          for (const p of new Set<NodeId>([o.top, ...model.lists.keys()])) void this.reload(p);
          return;
        }
        const infos = reads.map((r) => ("info" in r ? r.info : null));
        // The moved nodes' entries are whole infos (never a patch's fields).
        this.#place(moved, infos.slice(0, moved.length) as (NodeInfo | null)[], seq, parents);
        let patched = false;
        for (let k = moved.length; k < ids.length; k++) {
          const info = infos[k];
          const loc = model.where.get(ids[k]);
          if (info && loc) {
            loc.view.fields = info.fields;
            patched = true;
          }
        }
        if (patched) o.viewport.render();
      })
      .catch((e: unknown) => showError(e, "Could not read changed nodes"))
      .finally(() => {
        queue.endRead(seq);
        this.#busy--;
      });
  }

  /** Places every moved node where the worker says it is now: out of the
   * loaded list that had it, into its new parent's loaded list at its
   * (key, id) place; its rows follow (spliced, or all flattened again for
   * a bigger batch). A node with an edit this read may predate is left
   * where the edit put it. */
  #place(ids: NodeId[], infos: (NodeInfo | null)[], seq: number, parents: NodeId[]): void {
    const o = this.#o;
    const { model, rowFocus } = o;
    const stale = o.queue.staleAt(seq);
    let splice = !model.rowsDirty && ids.length <= ROW_SPLICE_MAX;
    const anchor = rowFocus.anchor();
    const gained = new Set<NodeId>();
    const fresh: NodeView[] = [];
    let changed = false;
    let patched = false;
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      const info = infos[k];
      const loc = model.where.get(id);
      if (loc && info) {
        loc.view.fields = info.fields;
        patched = true;
      }
      if (stale.has(id)) continue;
      const to = info && !info.deleted && info.parent !== null && info.key !== null ? info.parent : null;
      const key = info?.key ?? "";
      if (loc && loc.parent === to && loc.view.key === key && !model.unsettled.has(loc.view)) continue; // where it is
      changed = true;
      let view: NodeView | undefined;
      if (loc) {
        view = loc.view;
        model.listRemove(loc);
        if (splice && !model.rowsRemove(id)) splice = false;
      }
      if (to === null || !info) continue;
      gained.add(to);
      const list = model.lists.get(to);
      if (!list) continue; // not loaded: its row (if any) just gets a toggle
      if (!view) {
        const own = model.lists.get(id);
        view = { id, key, fields: info.fields, hasChildren: own ? own.length > 0 : false };
        if (!own) fresh.push(view); // whether it has children is read below
      }
      view.key = key;
      view.fields = info.fields;
      model.unsettled.delete(view);
      const at = model.lowerBound(list, key, id);
      list.splice(at, 0, view);
      model.where.set(id, { parent: to, view });
      if (splice && !model.rowsInsert(view, to, at)) splice = false;
    }
    if (changed) {
      if (splice) {
        model.pruneLists();
        rowFocus.follow(anchor);
        o.viewport.render();
        rowFocus.fulfil();
      } else {
        o.rebuild();
      }
    } else if (patched) {
      o.viewport.render();
    }
    this.#afterPlacing(parents, gained, fresh);
  }

  /** Brings the toggles of changed parents up to date: a parent that
   * gained a child has children; a parent whose list is loaded knows; any
   * other one on screen (and every newly seen node) is asked. */
  #afterPlacing(parents: NodeId[], gained: Set<NodeId>, fresh: NodeView[]): void {
    const { model } = this.#o;
    let repaint = false;
    const probes: NodeId[] = [];
    for (const p of new Set([...parents, ...gained])) {
      if (p === this.#o.top || p === TRASH) continue;
      const loc = model.where.get(p);
      const list = model.lists.get(p);
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
    if (repaint) this.#o.viewport.render();
  }

  /** Asks whether each node has children (for its toggle). */
  #probe(ids: NodeId[]): void {
    const o = this.#o;
    for (const p of ids.slice(0, PROBE_MAX)) {
      this.#busy++;
      o.arbor
        .children(p, { limit: 1 })
        .then((page) => {
          const loc = o.model.where.get(p);
          if (loc && !o.model.lists.has(p)) {
            loc.view.hasChildren = page.length > 0;
            if (page.length > 0) this.#loadIfOpen(p);
            o.viewport.render();
          }
        })
        .catch(() => {})
        .finally(() => this.#busy--);
    }
  }

  /** An expanded row on screen that just got children loads them. */
  #loadIfOpen(id: NodeId): void {
    const { model, expanded } = this.#o;
    if (expanded.has(id) && model.row(id) !== undefined && !model.lists.has(id)) void this.reload(id);
  }
}
