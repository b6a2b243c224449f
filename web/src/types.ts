// The public types of Arbor's browser API (see docs/BROWSER.md).

/** A node id: a UUID in its 36-character text form. */
export type NodeId = string;

/** The root every thoughtspace has. */
export const ROOT: NodeId = "00000000-0000-0000-0000-000000000000";
/** Deleted nodes live under TRASH until restored. */
export const TRASH: NodeId = "ffffffff-ffff-ffff-ffff-ffffffffffff";

/** Where a node goes among its new siblings. */
export type Position = "first" | "last" | { before: NodeId } | { after: NodeId };

/** A child as `children` returns it. */
export interface NodeView {
  id: NodeId;
  /** The order key in lowercase hex: siblings are ordered by (key, id) as
   * strings, so a moved node can be placed without reloading its list. */
  key: string;
  /** Set fields only (cleared ones are absent). */
  fields: Record<string, string>;
  /** True if the node has at least one child. */
  hasChildren: boolean;
}

/** What a write touched (local or remote). */
/** Node details as `node` returns them. */
export interface NodeInfo {
  id: NodeId;
  parent: NodeId | null;
  /** The order key among its siblings (lowercase hex), null for ROOT/TRASH. */
  key: string | null;
  fields: Record<string, string>;
  /** True if the node is (under) TRASH. */
  deleted: boolean;
}

export interface Changes {
  /** The whole replica was replaced (cold start): reload everything. */
  reset: boolean;
  /** Parents whose list of children changed. */
  parents: NodeId[];
  /** Nodes created, moved, deleted or restored. */
  moved: NodeId[];
  /** Nodes whose fields changed. */
  fields: NodeId[];
  /** Each node of `moved` as `node()` reads it right after this change
   * (`null`: no longer in the replica). Present when `moved` and `fields`
   * together hold at most 64 nodes (otherwise absent: read what you show),
   * so a view patches its rows without a call back to the worker. */
  nodes?: Record<NodeId, NodeInfo | null>;
  /** With `nodes`: the fields of each node of `fields` that did not move
   * (its place is unchanged). */
  values?: Record<NodeId, Record<string, string>>;
  /** What the ops applied in this change took from this replica's edits,
   * and the server's restores, newest last (also kept in the conflict list,
   * `Arbor.conflicts`). Empty for most changes. */
  conflicts: Conflict[];
}

/** An op in the JSON shape of docs/PROTOCOL.md ("Ops"): a move (create,
 * move, delete = a move under TRASH, restore) or a field write. */
export type OpJson =
  | { kind: "move"; stamp: string; known_seq: number; node: NodeId; parent: NodeId; key: string }
  | { kind: "set"; stamp: string; known_seq: number; node: NodeId; field: string; value: string | null };

/** Something this replica wrote that did not stand, or a node the server
 * brought back (docs/CLIENT.md, "The conflict list"). */
export type Conflict = {
  /** The seq of the committed op that caused it. */
  seq: number;
  /** The node. */
  node: NodeId;
  /** Who made that op (the token subject the server names as its author);
   * null for the server's restore rule, a skipped move, or an unclaimed
   * replica. */
  by: string | null;
} & (
  | {
      /** A value this replica wrote lost last-writer-wins to a concurrent
       * write of another replica. */
      kind: "field_overwritten";
      field: string;
      /** This replica's value (null: it had cleared the field). */
      lost: string | null;
      /** The value that won. */
      kept: string | null;
    }
  | {
      /** A move this replica made is not in effect: with moves it did not
       * know of, it would have made a cycle. `parent`: the parent it asked for. */
      kind: "move_skipped";
      parent: NodeId;
    }
  | {
      /** A node this replica placed last was moved elsewhere by a
       * concurrent move that won. `parent`: its parent now. */
      kind: "move_overridden";
      parent: NodeId;
    }
  | {
      /** The server's restore rule brought a deleted node back (an edit
       * inside it was concurrent with the delete). `parent`: where it went. */
      kind: "restored";
      parent: NodeId;
    }
);

/** An effect an undo or a redo left as someone else made it. */
export type KeptEffect =
  /** Someone else moved the node since: their move stands. */
  | { kind: "moved_since"; node: NodeId }
  /** Its old parent is deleted or gone: it stays visible where it is. */
  | { kind: "parent_gone"; node: NodeId; parent: NodeId }
  /** Its old parent is now below it: moving it back would be a cycle. */
  | { kind: "would_cycle"; node: NodeId; parent: NodeId }
  /** Someone else wrote the field since: their value stands. */
  | { kind: "overwritten"; node: NodeId; field: string };

/** What an undo or a redo did (`Arbor.undo`, `Arbor.redo`). */
export interface UndoReport {
  /** Nodes moved back (or deleted, for a create undone) and fields set back. */
  reverted: number;
  /** Effects already as they were: nothing written for them. */
  unchanged: number;
  /** Effects left as others made them, and why. */
  kept: KeptEffect[];
}

/** One op of a node's history on the server (`Arbor.history`). */
export interface HistoryEntry {
  /** Its seq in the thoughtspace. */
  seq: number;
  /** The op: the node's moves (under TRASH: a delete) and field writes. */
  op: OpJson;
  /** `new`, or `restore` (a move appended by the server's restore rule). */
  origin: "new" | "restore";
  /** Who made it (the token subject); null for restores and unclaimed replicas. */
  author: string | null;
  /** For a move, whether it is in effect (false: skipped as a cycle);
   * null for a field write. */
  applied: boolean | null;
}

/** A page of a node's history, newest first. */
export interface HistoryPage {
  entries: HistoryEntry[];
  /** Ask again with `before` = this for the next (older) page; null: no more. */
  nextBefore: number | null;
  /** The thoughtspace's head seq when the page was read. */
  headSeq: number;
}

/** A subtree as it was at a seq (`Arbor.subtreeAt`): the server's answer
 * to `GET .../subtree/{id}/at?seq=N` as it is (docs/PROTOCOL.md). */
export interface SubtreeAt {
  /** The seq. */
  seq: number;
  /** The subtree's root. */
  root: NodeId;
  /** Whether the root was in the tree then (false: `nodes` is empty). */
  present: boolean;
  /** Every node below the root then, with its place then (`key`: the order
   * key in hex; siblings sort by key, then id). */
  nodes: { id: NodeId; parent: NodeId; key: string }[];
  /** The registers then of the root and of `nodes` (`value` null: cleared;
   * `stamp` of the winning write). */
  registers: { node: NodeId; field: string; value: string | null; stamp: string }[];
  /** The nodes below the root now that were not below it then, with their
   * place then as `[parent, key]` (absent: not in the tree then). */
  elsewhere: { id: NodeId; place?: [NodeId, string] }[];
}

/** What `Arbor.revertSubtree` wrote. */
export interface RevertReport {
  /** The seq the subtree was brought back to. */
  seq: number;
  /** Nodes moved back to their place then (or to the trash: created since). */
  moved: number;
  /** Fields written back (or cleared: set since). */
  set: number;
  /** Nodes left where they are: their place then is now below them. */
  skipped: NodeId[];
}

/** What a connection shows the others of itself (`Arbor.setPresence`):
 * ephemeral, relayed by the server and never stored. Every key is
 * optional; the whole state is at most `MAX_PRESENCE_BYTES` of JSON as the
 * server encodes it (other keys are dropped). */
export interface PresenceState {
  /** A display name the application chose (the token's subject is the
   * peer's `sub`). */
  user?: string;
  /** The node the user's cursor is on. */
  focus?: NodeId;
  /** The nodes the user has selected. */
  selection?: NodeId[];
  /** Whether the user is editing `focus`. */
  editing?: boolean;
  /** Anything else (JSON). */
  data?: unknown;
}

/** The largest presence state, in bytes of JSON as the server encodes it
 * (a larger one is refused with `presence_too_large`). */
export const MAX_PRESENCE_BYTES = 2048;

/** Another connection to the same thoughtspace (presence). */
export interface Peer {
  /** The connection's id in the server's room (unique while it is open). */
  conn: number;
  /** The token's subject (the user). */
  sub: string;
  /** The replica id, as a decimal string. */
  replica: string | null;
  /** Its presence state, or null if it set none (or cleared it, or it
   * expired). */
  state: PresenceState | null;
}

/** What the sync client is doing. */
export type SyncState =
  | "offline"
  | "connecting"
  | "cold_start"
  | "catching_up"
  | "pushing"
  | "live"
  | "refused";

/** The replica's status, pushed to `onStatus` listeners. */
export interface Status {
  state: SyncState;
  /** Why the last session ended, if it did. */
  error: string | null;
  /** The last server seq applied (null: never synced). */
  cursor: number | null;
  /** Local ops not yet acknowledged by the server. */
  outbox: number;
  /** The other connections to the thoughtspace, with their presence
   * states. This browser's own connection (shared by its tabs) is left
   * out. Empty while offline. */
  peers: Peer[];
  /** Cold-start progress, while in `cold_start`: rows loaded of `total`
   * for a row snapshot; for a replica image (docs/PROTOCOL.md, "Replica
   * images") `bytes` decoded of `totalBytes`, with no rows. */
  progress: { rows: number; total: number; bytes: number; totalBytes: number } | null;
  /** Where the replica lives: OPFS (durable) or memory (lost on reload). */
  storage: "opfs" | "memory";
  /** This tab's worker owns the database, or forwards to the tab that does. */
  role: "owner" | "follower";
  /** Local ops the server refused for good, kept in the rejected list
   * (`Arbor.rejected`) until `clearRejected`. */
  rejected: number;
  /** A subtree replica's root (`OpenOptions.root`); null for a replica of
   * the whole thoughtspace. */
  root: NodeId | null;
  /** A subtree replica whose root was deleted (moved under TRASH) on the
   * server: the replica keeps the root and its contents. Always false for
   * a replica of the whole thoughtspace. */
  rootInTrash: boolean;
  /** This browser's own presence state for this replica, as the others
   * see it while connected (the last one any of its tabs set with
   * `setPresence`); null: none. */
  presence: PresenceState | null;
}

/** How to reach the server. */
export interface ConnectOptions {
  /** The sync server's HTTP base, e.g. "http://127.0.0.1:8080". */
  server: string;
  /** The realtime base (WebSocket) if it differs (the Durable Object tier). */
  realtime?: string;
  /** A bearer token for this thoughtspace. */
  token: string;
  /** Keep-alive period in ms (default 20,000); a connection silent for
   * three periods is presumed dead and reopened. */
  keepaliveMs?: number;
  /** A cold start first asks for the server's replica image (default
   * true): the space's finished SQLite file, imported into OPFS instead of
   * inserted row by row (docs/PROTOCOL.md, "Replica images"). Without one,
   * or for a replica in memory, it loads the snapshot's rows. */
  images?: boolean;
}

/** How to open a replica. */
export interface OpenOptions {
  /** The thoughtspace; it also names the database file. */
  space: string;
  /** The worker script's URL (default: "arbor-worker.js" next to the page). */
  workerUrl?: string | URL;
  /** Force a replica in memory (tests, private windows). */
  memory?: boolean;
  /** Replicate only the subtree of this node: the replica then holds
   * exactly the root and everything below it, as the server's tree has
   * them (nodes moved in arrive with their descendants, nodes moved out or
   * deleted leave with theirs), and the root shows as a child of ROOT
   * wherever it really is. It is a replica of its own: its own database
   * file and its own owner tab, never mixed with the whole thoughtspace's
   * replica or another subtree's. ROOT and TRASH are refused
   * (`reserved_node`). */
  root?: NodeId;
}

/** A local op the server refused for good (`Arbor.rejected`). */
export interface RejectedOp {
  /** The op, in the JSON shape of docs/PROTOCOL.md ("Ops"). */
  op: { kind: "move" | "set"; stamp: string; node: NodeId; [field: string]: unknown };
  /** The refusal's code (docs/PROTOCOL.md, "Error codes"). */
  code: string;
  /** The server's message. */
  message: string;
}

/** A node whose field holds a value (`Arbor.holders`): a context of the
 * value, in em's words. */
export interface Holder {
  id: NodeId;
  parent: NodeId;
  /** Its set fields. */
  fields: Record<string, string>;
}

/** A page of holders. */
export interface HoldersPage {
  /** In node id order. */
  holders: Holder[];
  /** The `after` of the next page, or null: no more. A page from the
   * server may hold fewer than its limit and still have a next. */
  next: NodeId | null;
}

/** A register whose value matched `Arbor.search`. */
export interface SearchHit {
  id: NodeId;
  parent: NodeId;
  /** The field that matched. */
  field: string;
  /** Its value. */
  value: string;
}

/** What `Arbor.mergeChildrenByValue` did. */
export interface MergeReport {
  /** The canonical child, which now has the others' children. */
  canonical: NodeId;
  /** How many duplicates were merged into it (and deleted). */
  merged: number;
}

/** A node's place: its parent and its order key among the siblings
 * (lowercase hex; siblings sort by key, then id). */
export interface PlaceJson {
  parent: NodeId;
  key: string;
}

/** A local op not yet acknowledged by the server, with what it does in
 * this replica (`Arbor.outbox`). */
export interface OutboxEntry {
  /** The op, as it will be pushed. */
  op: OpJson;
  /** Whether it is in effect here now. A move: false when it is skipped
   * (with moves applied since, it would make a cycle); null when the move
   * log does not hold it (stamped at or below the horizon, waiting to be
   * re-stamped, and not shown). A field write: false when a write with a
   * greater stamp won. */
  applied: boolean | null;
  /** A move in effect: where it took the node from; null when it created
   * the node, and for field writes and moves not in effect. */
  from: PlaceJson | null;
}

/** The move that put a node where it is: the applied move with the
 * greatest stamp among its moves (the tree CRDT's rule). */
export interface LastMove {
  /** The move's stamp ("<hlc hex>-<replica hex>": which replica, and when). */
  stamp: string;
  /** The parent it put the node under. */
  parent: NodeId;
  /** The order key it gave the node (hex). */
  key: string;
  /** Where it took the node from; null when it created the node, or when
   * `inLog` is false (the log no longer keeps the move's effect). */
  from: PlaceJson | null;
  /** Whether the move log holds it (above the horizon); false: found in
   * the history record. */
  inLog: boolean;
  /** This replica's own move, not acknowledged yet (in the outbox). */
  pending: boolean;
  /** Its seq, when the history record holds it (null: pending, or made
   * before the record starts). */
  seq: number | null;
  /** `new` or `restore` (the server's restore rule); null as `seq`. */
  origin: "new" | "restore" | null;
  /** Who made it (the token subject); null for restores, unclaimed
   * replicas, or when `seq` is null. */
  author: string | null;
}

/** Where a node is and why (`Arbor.place`). */
export interface PlaceReport {
  id: NodeId;
  /** Its parent (a subtree replica's root shows under ROOT). */
  parent: NodeId | null;
  /** Its order key among its siblings (hex). */
  key: string | null;
  /** Its ancestors, parent first, ending at ROOT or TRASH. */
  ancestors: NodeId[];
  /** True if it is (under) TRASH. */
  deleted: boolean;
  /** The move that put it there; null when the replica has no record of
   * one (placed before this replica's history record starts, or by a
   * subtree replica's feed, which carries state, not ops). */
  lastMove: LastMove | null;
}

/** A count of rows, exact up to 10,000 (`ReplicaSize`). */
export interface RowCount {
  /** The rows counted (10,000 when `exact` is false). */
  rows: number;
  /** False: the table holds more than `rows` (counting them all would
   * hold the worker up on a large replica). */
  exact: boolean;
}

/** What the replica holds and how big it is (`Arbor.size`). */
export interface ReplicaSize {
  /** The database's size as of its last commit (page_count × page_size;
   * pages not yet checkpointed from the WAL included). */
  databaseBytes: number;
  /** Nodes in the tree (ROOT and TRASH excluded). */
  nodes: RowCount;
  /** Field registers (cleared ones included). */
  fields: RowCount;
  /** Moves in the move log (above the horizon). */
  log: RowCount;
  /** Committed ops in the replica's history record. */
  history: RowCount;
  /** The lowest seq the history record holds (null: empty). */
  historyStart: number | null;
  /** Local ops not acknowledged yet. */
  outbox: number;
  /** Local ops the server refused for good. */
  rejected: number;
  /** Entries in the conflict list (at most 1,000). */
  conflicts: number;
  /** The last server seq applied (null: never synced). */
  cursor: number | null;
  /** The log horizon from the last snapshot (a stamp; null: none). */
  horizon: string | null;
}

/** An error from the replica, the worker or (for `history` and
 * `revertSubtree`) the server, with a stable code (`presence_too_large`
 * and `bad_presence` for `setPresence`; `unavailable` when the server
 * cannot be reached, or the replica is not connected). */
export class ArborError extends Error {
  constructor(
    public readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ArborError";
  }
}
