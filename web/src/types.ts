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
export interface Changes {
  /** The whole replica was replaced (cold start): reload everything. */
  reset: boolean;
  /** Parents whose list of children changed. */
  parents: NodeId[];
  /** Nodes created, moved, deleted or restored. */
  moved: NodeId[];
  /** Nodes whose fields changed. */
  fields: NodeId[];
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
  /** Cold-start progress (rows loaded of total), while in `cold_start`. */
  progress: { rows: number; total: number; bytes: number } | null;
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

/** An error from the replica or the worker, with a stable code
 * (`presence_too_large` and `bad_presence` for `setPresence`). */
export class ArborError extends Error {
  constructor(
    public readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ArborError";
  }
}
