// Arbor's browser API: the page's handle on a replica that lives in a
// dedicated Web Worker (so the page never blocks on SQLite or sync).
// Every call is a message to that worker; see worker.ts for how several
// tabs share one replica.

import {
  ArborError,
  type Changes,
  type Conflict,
  type ConnectOptions,
  type HistoryPage,
  type HoldersPage,
  type MergeReport,
  type NodeId,
  type NodeInfo,
  type NodeView,
  type OpenOptions,
  type OutboxEntry,
  type Peer,
  type PlaceReport,
  type Position,
  type PresenceState,
  type RejectedOp,
  type ReplicaSize,
  type RevertReport,
  type SearchHit,
  type SubtreeAt,
  type Status,
  type UndoReport,
} from "./types.js";

export * from "./types.js";

/** A call from the page to its worker. */
export interface CallMsg {
  id: number;
  method: string;
  args: unknown[];
}

/** What the worker sends the page. */
export type WorkerMsg =
  | { id: number; ok: unknown }
  | { id: number; err: { code: string; message: string } }
  | { event: "changes"; changes: Changes }
  | { event: "status"; status: Status };

/** What names a replica among the workers of an origin (in the worker's
 * name, its Web Lock and its BroadcastChannel): the thoughtspace, and a
 * subtree replica's root after a "~" (which no thoughtspace name has:
 * they are `[A-Za-z0-9_.-]`).
 * @internal Shared with the worker. */
export function replicaKey(space: string, root: NodeId | null): string {
  return root === null ? space : `${space}~${root}`;
}

/** A replica of one thoughtspace, opened in this tab. */
export class Arbor {
  #worker: Worker;
  #next = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #changes = new Set<(c: Changes) => void>();
  #statusListeners = new Set<(s: Status) => void>();
  #peersListeners = new Set<(peers: Peer[]) => void>();
  /** The peers as last given to `onPeers` listeners (JSON, to compare). */
  #peersKey = "[]";
  #status: Status;

  private constructor(worker: Worker, status: Status) {
    this.#worker = worker;
    this.#status = status;
  }

  /** Opens the replica for `options.space`, or with `options.root` the
   * replica of that node's subtree (OPFS, or memory with a warning in the
   * status where OPFS is missing). */
  static async open(options: OpenOptions): Promise<Arbor> {
    const url = options.workerUrl ?? new URL("arbor-worker.js", import.meta.url);
    // Node ids are hex: one root, one replica, however it is spelled.
    const root = options.root?.toLowerCase() ?? null;
    const worker = new Worker(url, { type: "module", name: `arbor:${replicaKey(options.space, root)}` });
    const arbor = new Arbor(worker, {
      state: "offline",
      error: null,
      cursor: null,
      outbox: 0,
      peers: [],
      progress: null,
      storage: "memory",
      role: "follower",
      rejected: 0,
      root,
      rootInTrash: false,
      presence: null,
    });
    worker.onmessage = (e: MessageEvent<WorkerMsg>) => arbor.#receive(e.data);
    worker.onerror = (e) => {
      for (const p of arbor.#pending.values()) p.reject(new ArborError("worker", e.message));
      arbor.#pending.clear();
    };
    arbor.#setStatus((await arbor.#call("open", options.space, options.memory ?? false, root)) as Status);
    return arbor;
  }

  #receive(msg: WorkerMsg): void {
    if ("event" in msg) {
      if (msg.event === "changes") for (const f of this.#changes) f(msg.changes);
      else this.#setStatus(msg.status);
      return;
    }
    const p = this.#pending.get(msg.id);
    if (!p) return;
    this.#pending.delete(msg.id);
    if ("err" in msg) p.reject(new ArborError(msg.err.code, msg.err.message));
    else p.resolve(msg.ok);
  }

  #setStatus(status: Status): void {
    this.#status = status;
    for (const f of this.#statusListeners) f(status);
    const key = JSON.stringify(status.peers);
    if (key === this.#peersKey) return;
    this.#peersKey = key;
    for (const f of this.#peersListeners) f(status.peers);
  }

  #call(method: string, ...args: unknown[]): Promise<unknown> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, method, args } satisfies CallMsg);
    });
  }

  /** Creates a node under `parent` at `pos`, with optional fields. */
  async create(parent: NodeId, pos: Position = "last", fields: Record<string, string> = {}): Promise<NodeId> {
    return (await this.#call("create", parent, pos, fields)) as NodeId;
  }

  /** Moves `node` under `parent` at `pos` (a move that would make a cycle is ignored). */
  async move(node: NodeId, parent: NodeId, pos: Position = "last"): Promise<void> {
    await this.#call("move", node, parent, pos);
  }

  /** Moves `node` to TRASH (restore brings it back). */
  async delete(node: NodeId): Promise<void> {
    await this.#call("delete", node);
  }

  /** Brings a deleted node back to where it was deleted from. */
  async restore(node: NodeId): Promise<void> {
    await this.#call("restore", node);
  }

  /** Sets a field (`null` clears it). */
  async set(node: NodeId, field: string, value: string | null): Promise<void> {
    await this.#call("set", node, field, value);
  }

  /** Resolves once every edit made so far (by any tab of this replica) is
   * saved in the replica file. Edits are shown (change events, reads) as
   * soon as they are applied and saved together once edits pause for 2 ms,
   * at most 25 ms after the first (docs/BROWSER.md, "Durability"); each
   * write call also resolves only once its edit is saved. */
  async saved(): Promise<void> {
    await this.#call("saved");
  }

  /** A page of `parent`'s children in order, after the child `after`. */
  async children(parent: NodeId, opts: { after?: NodeId; limit?: number } = {}): Promise<NodeView[]> {
    return (await this.#call("children", parent, opts.after ?? null, opts.limit ?? 1000)) as NodeView[];
  }

  // ---------------------------------------------------------------- lookups by value

  /** A page of the nodes whose `field` holds `value` (em's contexts of a
   * thought), compared normalized: lowercase, Unicode NFC, runs of
   * whitespace as one space, trimmed (docs/PROTOCOL.md, "Lookups by
   * value"). Deleted nodes are left out; pages go in node id order:
   * continue with `after: page.next` while it is not null. `server: true`
   * asks the server instead of the replica: a subtree replica holds only
   * its subtree's holders (the server answers what the token may see). */
  async holders(field: string, value: string, opts: { after?: NodeId; limit?: number; server?: boolean } = {}): Promise<HoldersPage> {
    return (await this.#call("holders", field, value, opts.after ?? null, opts.limit ?? 100, opts.server ?? false)) as HoldersPage;
  }

  /** Full-text search: the registers whose value holds every word of
   * `query` (runs of letters and digits, any case; the last word as a
   * prefix, so it can follow typing), best first. `field` and `root` (a
   * node and its descendants) narrow it; deleted nodes are left out.
   * `server: true` asks the server (needs `connect`): a subtree replica
   * holds only its subtree. */
  async search(query: string, opts: { field?: string; root?: NodeId; limit?: number; server?: boolean } = {}): Promise<SearchHit[]> {
    return (await this.#call("search", query, opts.field ?? null, opts.root ?? null, opts.limit ?? 20, opts.server ?? false)) as SearchHit[];
  }

  /** The child of `parent` whose `field` holds `value` (normalized), in
   * one indexed lookup, or null. Of several (made concurrently on two
   * devices), the canonical one: the first in sibling order. */
  async childByValue(parent: NodeId, field: string, value: string): Promise<NodeId | null> {
    return (await this.childrenByValue(parent, field, value))[0] ?? null;
  }

  /** Every child of `parent` whose `field` holds `value`, in sibling
   * order: the canonical one first, then its duplicates. */
  async childrenByValue(parent: NodeId, field: string, value: string): Promise<NodeId[]> {
    return (await this.#call("childrenByValue", parent, field, value)) as NodeId[];
  }

  /** Merges the duplicates among `parent`'s children holding `value` into
   * the canonical one: their children move to its end, in order, and they
   * are deleted (restorable). One undo step; null if no child holds it. */
  async mergeChildrenByValue(parent: NodeId, field: string, value: string): Promise<MergeReport | null> {
    return (await this.#call("mergeChildrenByValue", parent, field, value)) as MergeReport | null;
  }

  /** A node's parent and fields, or null if the replica does not have it. */
  async node(id: NodeId): Promise<NodeInfo | null> {
    return (await this.#call("node", id)) as NodeInfo | null;
  }

  /** The number of nodes in the tree (ROOT and TRASH excluded). */
  async count(): Promise<number> {
    return (await this.#call("count")) as number;
  }

  /** Local ops the server refused for good, oldest first, with why: they
   * left the outbox and are never pushed again (`status.rejected` counts
   * them). Show them to the user, then `clearRejected`. */
  async rejected(): Promise<RejectedOp[]> {
    return (await this.#call("rejected")) as RejectedOp[];
  }

  /** Empties the rejected list; resolves to how many ops it held. */
  async clearRejected(): Promise<number> {
    return (await this.#call("clearRejected")) as number;
  }

  // ---------------------------------------------------------------- undo and redo

  /** Opens an undo step: the edits until the matching `endStep` are undone
   * together (a create with its title, a multi-select move). Steps nest;
   * the outermost counts. Every write outside a step is a step of its own.
   * The replica (and so its undo history) is shared by the tabs of this
   * browser: an edit made in another tab while a step is open joins it. */
  async beginStep(): Promise<void> {
    await this.#call("beginStep");
  }

  /** Closes the step `beginStep` opened. */
  async endStep(): Promise<void> {
    await this.#call("endStep");
  }

  /** Undoes the last step (closing an open one first) as new ops that sync
   * like any edit; resolves to what it did, or null if there was nothing
   * to undo. What others changed since is left as they made it
   * (`UndoReport.kept`). */
  async undo(): Promise<UndoReport | null> {
    return (await this.#call("undo")) as UndoReport | null;
  }

  /** Redoes the last undone step (while nothing new was edited since); null
   * if there is none. */
  async redo(): Promise<UndoReport | null> {
    return (await this.#call("redo")) as UndoReport | null;
  }

  /** Whether there is a step to undo. */
  async canUndo(): Promise<boolean> {
    return (await this.#call("canUndo")) as boolean;
  }

  /** Whether there is a step to redo. */
  async canRedo(): Promise<boolean> {
    return (await this.#call("canRedo")) as boolean;
  }

  // ---------------------------------------------------------------- conflicts

  /** The conflict list, newest first, at most `limit` (default 100; the
   * replica keeps the last 1,000). New conflicts also arrive with change
   * events (`Changes.conflicts`, see `subscribe`). */
  async conflicts(limit = 100): Promise<Conflict[]> {
    return (await this.#call("conflicts", limit)) as Conflict[];
  }

  /** Empties the conflict list; resolves to how many it held. */
  async clearConflicts(): Promise<number> {
    return (await this.#call("clearConflicts")) as number;
  }

  // ---------------------------------------------------------------- history

  /** A page of `node`'s history from the server, newest first: its moves,
   * the restore rule's moves of it and its field writes, with seq below
   * `before` (default: from the newest), at most `limit` (1 to 1,000,
   * default 100). Read with the connection's server and token: rejects
   * with `unavailable` while not connected, and with the server's code
   * otherwise (`out_of_scope` for a token limited to a subtree).
   * `local: true` reads this replica's own record instead: no network,
   * works offline, holds the seqs since this replica's first sync (or the
   * whole log after loading an export); `headSeq` is the replica's cursor. */
  async history(
    node: NodeId,
    opts: { before?: number; limit?: number; local?: boolean } = {},
  ): Promise<HistoryPage> {
    const method = opts.local ? "localHistory" : "history";
    return (await this.#call(method, node, opts.before ?? null, opts.limit ?? 100)) as HistoryPage;
  }

  /** The subtree of `node` (ROOT: the whole space) as it was at `seq`,
   * read from the server with the connection's token (whole-space tokens:
   * else `out_of_scope`). Needs the connection, like `history`; a seq
   * outside the server's recorded history is `bad_request`. */
  async subtreeAt(node: NodeId, seq: number): Promise<SubtreeAt> {
    return (await this.#call("subtreeAt", node, seq)) as SubtreeAt;
  }

  /** Brings the subtree of `node` back to how it was at `seq` (the server
   * says what it was: `GET .../subtree/{node}/at?seq=`) as new ops, in one
   * undo step: they sync like any edit, so every replica ends with the
   * subtree as it was. Needs the connection, like `history`. */
  async revertSubtree(node: NodeId, seq: number): Promise<RevertReport> {
    return (await this.#call("revertSubtree", node, seq)) as RevertReport;
  }

  // ---------------------------------------------------------------- inspector

  /** The first `limit` (1 to 1,000, default 100) local ops the server has
   * not acknowledged, oldest first (the order they are pushed in), each
   * with its effect here (`OutboxEntry.applied`: false for a write that
   * lost or a move skipped as a cycle). `status().outbox` counts them all. */
  async outbox(limit = 100): Promise<OutboxEntry[]> {
    return (await this.#call("outboxEntries", limit)) as OutboxEntry[];
  }

  /** Committed ops of every node from this replica's history record,
   * newest first, with seq below `before` (default: from the newest), at
   * most `limit` (1 to 1,000, default 100): entries as `history` gives
   * them for one node (seq, op, origin, author, applied). No network;
   * `headSeq` is the replica's cursor. */
  async recentOps(opts: { before?: number; limit?: number } = {}): Promise<HistoryPage> {
    return (await this.#call("recentOps", opts.before ?? null, opts.limit ?? 100)) as HistoryPage;
  }

  /** The server's restores (moves with origin `restore`: a deleted node
   * brought back because an edit inside it was concurrent with the
   * delete) among the newest 10,000 committed ops below `before`, newest
   * first, at most `limit` (default 100). The record has no index on
   * restores, so one call reads a bounded window: `nextBefore` (non-null
   * while older ops remain) is where the next call looks on. */
  async restores(opts: { before?: number; limit?: number } = {}): Promise<HistoryPage> {
    return (await this.#call("restores", opts.before ?? null, opts.limit ?? 100)) as HistoryPage;
  }

  /** Where `node` is (parent, key, ancestors, deleted) and the move that
   * put it there (`lastMove`: who made it, at which seq, from where, or
   * pending here); null if the replica does not have the node. Its whole
   * record: `history(node, {local: true})`. */
  async place(node: NodeId): Promise<PlaceReport | null> {
    return (await this.#call("place", node)) as PlaceReport | null;
  }

  /** What the replica holds and how big it is: the database's bytes, the
   * rows of its tables (counted up to 10,000 each, `RowCount.exact`: a
   * full count reads every row; `count()` counts the nodes exactly), the
   * outbox, rejected and conflict counts, cursor and horizon. */
  async size(): Promise<ReplicaSize> {
    return (await this.#call("size")) as ReplicaSize;
  }

  /** Calls `f` after every change (local or remote); returns the unsubscribe.
   * A change carries the conflicts its ops caused (`Changes.conflicts`). */
  subscribe(f: (c: Changes) => void): () => void {
    this.#changes.add(f);
    return () => this.#changes.delete(f);
  }

  /** Starts syncing (and keeps reconnecting) until `disconnect`. */
  async connect(options: ConnectOptions): Promise<void> {
    await this.#call("connect", options);
  }

  /** Stops syncing: edits keep queueing in the outbox until `connect`. */
  async disconnect(): Promise<void> {
    await this.#call("disconnect");
  }

  /** The last status the worker reported. */
  status(): Status {
    return this.#status;
  }

  /** Calls `f` on every status change; returns the unsubscribe. */
  onStatus(f: (s: Status) => void): () => void {
    this.#statusListeners.add(f);
    return () => this.#statusListeners.delete(f);
  }

  /** Shows `state` to the others connected to the thoughtspace (null
   * clears it), until it is set again: the running sync session sends it
   * at once, or at most every 100 ms when it changes faster (the latest
   * wins), again every 10 s while set, and again after every reconnect;
   * while offline it waits for the next connection. The tabs of this
   * browser share one connection and so one state: the last one any of
   * them set (it survives a change of owner tab). Rejects with
   * `ArborError` `presence_too_large` (and changes nothing) when the state
   * is over `MAX_PRESENCE_BYTES` of JSON, `bad_presence` when it is not a
   * presence state. Never stored. */
  async setPresence(state: PresenceState | null): Promise<void> {
    await this.#call("setPresence", state);
  }

  /** The other connections and their presence states (`status().peers`). */
  peers(): Peer[] {
    return this.#status.peers;
  }

  /** Calls `f` whenever the other connections or their presence states
   * change (a subset of the status changes); returns the unsubscribe. */
  onPeers(f: (peers: Peer[]) => void): () => void {
    this.#peersListeners.add(f);
    return () => this.#peersListeners.delete(f);
  }

  /** Test hook: while this tab owns the replica, it runs the calls other
   * tabs forward but never answers them, as an owner that dies between a
   * call's edit and its reply would (the handover test).
   * @internal */
  async _holdReplies(): Promise<void> {
    await this.#call("holdReplies");
  }

  /** Closes the worker (this tab's share of the replica). */
  close(): void {
    this.#worker.terminate();
  }
}
