// The dedicated Web Worker behind `Arbor` (one per tab). Several tabs of
// one origin share one replica: the worker that holds the Web Lock
// `arbor-owner:<space>` owns the database (OPFS allows one owner per
// pool) and runs the sync loop; the others forward calls to it over a
// BroadcastChannel and relay its change and status events to their page.
// When the owner's tab closes, its lock is released and the next waiting
// worker opens the database and takes over, resending calls still open.
// A subtree replica is another replica: its lock and channel are named
// `<space>~<root>` (see `replicaKey`), and its database is in a pool of
// its own, so it has an owner of its own next to the whole space's.
//
// Presence: the tabs share the owner's connection, so they share one
// presence state, the last one any tab set (`setPresence` is a call like
// the others, run by the owner). The owner's status carries it
// (`Status.presence`), so every follower knows it, and a worker that takes
// ownership sets it on its new replica before connecting: the others keep
// seeing it across the handover.
//
// A call forwarded to the owner has a key, the follower's id and the
// call's number, and every write it makes records that key with its edit
// (`WebReplica.setCallKey`). When an owner dies after a call's edit but
// before its reply, the follower resends the call to the next owner, which
// finds the key and answers without writing again (`runKeyed`): a handover
// never repeats an edit, and never loses one (a call is resent until it is
// answered).
//
// Undo and redo, steps and the conflict list are calls like the others
// (the undo history lives with the owner's open replica), and so are the
// inspector's reads (outbox, recent ops, restores, a node's place, the
// size): reads, so a follower's are simply run again by a new owner. `history` and
// `revertSubtree` read the server with the owner's connection (its server
// and token, from `connect`), so their answer is a promise: the owner
// replies when it settles (`settle`).

import init, { WebReplica } from "../pkg/arbor_client_web.js";
import { type CallMsg, type WorkerMsg, replicaKey } from "./arbor.js";
import type { Changes, ConnectOptions, Status } from "./types.js";

/** Messages between the workers of one origin and replica. */
type PeerMsg =
  | { kind: "call"; from: string; cid: number; method: string; args: unknown[] }
  | { kind: "reply"; to: string; cid: number; ok?: unknown; err?: { code: string; message: string } }
  | { kind: "changes"; changes: Changes }
  | { kind: "status"; status: Status }
  | { kind: "owner" }
  | { kind: "hello" };

const scope = self as unknown as DedicatedWorkerGlobalScope;
const me = crypto.randomUUID();
let space = "";
let memory = false;
/** A subtree replica's root (null: the whole space). */
let root: string | null = null;
let channel: BroadcastChannel | null = null;
let replica: WebReplica | null = null;
let lastStatus: Status | null = null;
/** The connection every tab wants (shared: one socket per origin). */
let wanted: ConnectOptions | null = null;
/** Calls forwarded to the owner and not answered yet. */
const forwarded = new Map<number, { page: number; method: string; args: unknown[] }>();
let nextCid = 1;
let ownerReady: Promise<void> | null = null;
/** Test hook (`Arbor._holdReplies`): this owner runs forwarded calls but
 * never replies, as one that dies between a call's edit and its reply. */
let holdReplies = false;
let statusSeen: (() => void) | null = null;

function post(msg: WorkerMsg): void {
  scope.postMessage(msg);
}

function toPage(status: Status, role: "owner" | "follower"): Status {
  return { ...status, role };
}

function error(e: unknown): { code: string; message: string } {
  if (e && typeof e === "object" && "code" in e && "message" in e) {
    return { code: String((e as { code: unknown }).code), message: String((e as { message: unknown }).message) };
  }
  return { code: "worker", message: e instanceof Error ? e.message : String(e) };
}

/** Runs a call against the replica this worker owns: its answer, or a
 * promise of it. The replica sees the calls in the order they came. A
 * write is applied (and its change event sent) at once, and answered once
 * it is saved (`saved()`: the replica commits held edits when edits pause,
 * see docs/BROWSER.md). */
function execute(r: WebReplica, method: string, args: unknown[]): unknown {
  const v = run(r, method, args);
  return WRITES.has(method) ? afterSaved(r, v) : v;
}

/** `v` (or what it resolves to), once every edit made so far is saved. */
function afterSaved(r: WebReplica, v: unknown): Promise<unknown> {
  return Promise.resolve(v).then((x) => (r.saved() as Promise<void>).then(() => x));
}

function run(r: WebReplica, method: string, args: unknown[]): unknown {
  const s = (v: unknown) => JSON.stringify(v);
  const parse = (p: Promise<unknown>) => p.then((json) => JSON.parse(json as string) as unknown);
  switch (method) {
    case "create":
      return r.create(args[0] as string, s(args[1] ?? "last"), s(args[2] ?? {}));
    case "move":
      return r.moveNode(args[0] as string, args[1] as string, s(args[2] ?? "last"));
    case "delete":
      return r.delete(args[0] as string);
    case "restore":
      return r.restore(args[0] as string);
    case "set":
      return r.set(args[0] as string, args[1] as string, (args[2] as string | null) ?? undefined);
    case "children":
      return JSON.parse(r.children(args[0] as string, (args[1] as string | null) ?? undefined, args[2] as number));
    case "node":
      return JSON.parse(r.node(args[0] as string));
    case "count":
      return r.count();
    case "holders":
      return args[4]
        ? parse(r.serverHolders(args[0] as string, args[1] as string, (args[2] as string | null) ?? undefined, args[3] as number))
        : JSON.parse(r.holders(args[0] as string, args[1] as string, (args[2] as string | null) ?? undefined, args[3] as number));
    case "search": {
      const [q, field, root, limit, server] = args as [string, string | null, string | null, number, boolean];
      return server
        ? parse(r.serverSearch(q, field ?? undefined, root ?? undefined, limit))
        : JSON.parse(r.search(q, field ?? undefined, root ?? undefined, limit));
    }
    case "childrenByValue":
      return JSON.parse(r.childrenByValue(args[0] as string, args[1] as string, args[2] as string));
    case "mergeChildrenByValue":
      return JSON.parse(r.mergeChildrenByValue(args[0] as string, args[1] as string, args[2] as string));
    case "saved":
      return r.saved();
    case "rejected":
      return JSON.parse(r.rejected());
    case "clearRejected":
      return r.clear_rejected();
    case "setPresence":
      r.setPresence(s(args[0] ?? null));
      return null;
    case "beginStep":
      r.beginStep();
      return null;
    case "endStep":
      r.endStep();
      return null;
    case "undo":
      return JSON.parse(r.undo());
    case "redo":
      return JSON.parse(r.redo());
    case "canUndo":
      return r.canUndo();
    case "canRedo":
      return r.canRedo();
    case "conflicts":
      return JSON.parse(r.conflicts((args[0] as number | undefined) ?? 100));
    case "clearConflicts":
      return r.clearConflicts();
    case "history":
      return parse(r.history(args[0] as string, (args[1] as number | null) ?? undefined, (args[2] as number | undefined) ?? 100));
    case "localHistory":
      return JSON.parse(r.localHistory(args[0] as string, (args[1] as number | null) ?? undefined, (args[2] as number | undefined) ?? 100));
    case "subtreeAt":
      return parse(r.subtreeAt(args[0] as string, args[1] as number));
    case "revertSubtree":
      return parse(r.revertSubtree(args[0] as string, args[1] as number));
    case "outboxEntries":
      return JSON.parse(r.outboxEntries((args[0] as number | undefined) ?? 100));
    case "recentOps":
      return JSON.parse(r.recentOps((args[0] as number | null) ?? undefined, (args[1] as number | undefined) ?? 100));
    case "restores":
      return JSON.parse(r.restores((args[0] as number | null) ?? undefined, (args[1] as number | undefined) ?? 100));
    case "place":
      return JSON.parse(r.place(args[0] as string));
    case "size":
      return JSON.parse(r.size());
    case "connect": {
      wanted = args[0] as ConnectOptions;
      connectedSilently = true;
      r.connect(wanted.server, wanted.realtime ?? "", wanted.token, wanted.keepaliveMs ?? 0, wanted.images ?? true);
      return null;
    }
    case "disconnect":
      wanted = null;
      r.disconnect();
      return null;
    case "status":
      return JSON.parse(r.status());
    default:
      throw { code: "bad_method", message: `unknown method ${method}` };
  }
}

/** The calls that write to the replica: run once per key. */
const WRITES = new Set(["create", "move", "delete", "restore", "set", "undo", "redo", "revertSubtree", "mergeChildrenByValue"]);

// Progressive hydration: while a cold start holds the replica (a call
// fails `busy`), a write or a read of the tree is not refused: it waits
// for the cold start and runs then, in the order the calls came. While the
// replica's first cold start is pending (connected, never loaded), the
// first page of a node's children is read from the server's children
// endpoint with the connection's token, so a page shows at once whatever
// the size of the space; other calls run on the replica as they come (an
// edit made before the load starts goes into the outbox and is rebased on
// the snapshot, as any offline edit: a first load that never comes, the
// server down or refusing, blocks nothing). (docs/BROWSER.md, "Progressive
// hydration".)

/** The calls that wait for a cold start holding the replica. */
const WAITS = new Set([...WRITES, "children", "node", "count", "holders", "search", "childrenByValue", "canUndo", "canRedo", "beginStep", "endStep", "localHistory"]);

/** `connect` ran and the session has not said anything yet. */
let connectedSilently = false;

/** Whether the replica's first cold start is pending. */
function firstLoadPending(): boolean {
  const s = lastStatus;
  if (wanted === null || s === null || s.cursor !== null) return false;
  return connectedSilently || s.state === "connecting" || s.state === "cold_start";
}

/** Resolves when the status next changes (the calls waiting for a cold
 * start look again then). */
let statusChanged: { promise: Promise<void>; resolve: () => void } | null = null;

function nextStatus(): Promise<void> {
  if (!statusChanged) {
    let resolve: () => void = () => {};
    const promise = new Promise<void>((r) => (resolve = r));
    statusChanged = { promise, resolve };
  }
  // Also after a moment: a replica still held by an older session's cold
  // start lets go without a status of its own.
  return Promise.race([statusChanged.promise, new Promise<void>((r) => setTimeout(r, 100))]);
}

function isBusy(e: unknown): boolean {
  return error(e).code === "busy";
}

/** Calls waiting for the cold start, in order: each runs once the one
 * before it has run. */
let waiting: Promise<unknown> = Promise.resolve();

/** Runs `f` (a call of `method`), or, while a cold start is pending or
 * holds the replica, once it is over, after the calls that waited before
 * it. The first page of children comes from the server meanwhile. */
function patiently(method: string, args: unknown[], f: () => unknown): unknown {
  const wait = async (): Promise<unknown> => {
    for (;;) {
      try {
        return await f();
      } catch (e) {
        if (!isBusy(e)) throw e;
      }
      await nextStatus();
    }
  };
  const queued = (): Promise<unknown> => {
    const run = waiting.then(wait, wait);
    waiting = run.catch(() => {});
    return run;
  };
  if (method === "children" && args[1] == null && (firstLoadPending() || lastStatus?.state === "cold_start")) {
    return serverChildren(args[0] as string, (args[2] as number | undefined) ?? 1000).then((page) => page ?? queued());
  }
  if (!WAITS.has(method)) return f();
  try {
    const v = f();
    return v instanceof Promise ? v.catch((e: unknown) => (isBusy(e) ? queued() : Promise.reject(e))) : v;
  } catch (e) {
    if (isBusy(e)) return queued();
    throw e;
  }
}

/** The first page of `parent`'s children from the server (its children
 * endpoint, with the connection's server and token), as `children`
 * answers; null when it cannot say (not connected, the root of a subtree
 * replica, an error): the call then waits for the replica. */
async function serverChildren(parent: string, limit: number): Promise<unknown[] | null> {
  const ROOT = "00000000-0000-0000-0000-000000000000";
  const c = wanted;
  // A subtree replica shows its root under ROOT: the server's ROOT is
  // another list.
  if (!c || (root !== null && parent === ROOT)) return null;
  const base = c.server.replace(/\/+$/, "");
  const url = `${base}/v1/spaces/${encodeURIComponent(space)}/nodes/${encodeURIComponent(parent)}/children?limit=${Math.min(Math.max(limit, 1), 1000)}`;
  try {
    const res = await fetch(url, { headers: { authorization: `Bearer ${c.token}` } });
    if (!res.ok) return null;
    const body = (await res.json()) as {
      children: { id: string; key: string; payloads: Record<string, { value: string | null }>; has_children?: boolean }[];
    };
    return body.children.map((n) => ({
      id: n.id,
      key: n.key,
      fields: Object.fromEntries(
        Object.entries(n.payloads)
          .filter(([, p]) => p.value !== null)
          .map(([f, p]) => [f, p.value as string]),
      ),
      hasChildren: n.has_children ?? false,
    }));
  } catch {
    return null;
  }
}

/** Runs a forwarded call (`key`: its forwarder's id and number) once: a
 * write whose key the replica holds already happened, and is answered
 * from the record (a create with the node it made; an undo, redo or revert
 * whose report went with the old owner with `null`, or a report of no
 * change) instead of being made again. */
function runKeyed(r: WebReplica, method: string, args: unknown[], key: string): unknown {
  if (!WRITES.has(method)) return execute(r, method, args);
  const done = r.callDone(key) as string | null | undefined;
  if (done !== undefined) {
    // Found: made already (and answered once saved, as when it was made).
    if (method === "create") return afterSaved(r, done);
    if (method === "revertSubtree") return afterSaved(r, { seq: args[1], moved: 0, set: 0, skipped: 0 });
    return afterSaved(r, null);
  }
  if (method === "revertSubtree") {
    return afterSaved(r, r.revertSubtree(args[0] as string, args[1] as number, key).then((json) => JSON.parse(json as string) as unknown));
  }
  r.setCallKey(key);
  try {
    return execute(r, method, args);
  } finally {
    r.setCallKey(null);
  }
}

async function becomeOwner(): Promise<void> {
  await init();
  replica = await WebReplica.open(space, memory, root ?? undefined);
  const r = replica;
  // The presence state the last owner showed (from its status), shown
  // again by this one.
  const presence = lastStatus?.presence ?? null;
  if (presence) {
    try {
      r.setPresence(JSON.stringify(presence));
    } catch (e) {
      console.warn("arbor: the presence state was not kept:", error(e).message);
    }
  }
  r.onChanges((json: string) => {
    const changes = JSON.parse(json) as Changes;
    post({ event: "changes", changes });
    channel?.postMessage({ kind: "changes", changes } satisfies PeerMsg);
  });
  r.onStatus((json: string) => {
    const status = JSON.parse(json) as Status;
    lastStatus = status;
    connectedSilently = false;
    statusChanged?.resolve();
    statusChanged = null;
    post({ event: "status", status: toPage(status, "owner") });
    channel?.postMessage({ kind: "status", status } satisfies PeerMsg);
  });
  lastStatus = JSON.parse(r.status()) as Status;
  if (wanted) r.connect(wanted.server, wanted.realtime ?? "", wanted.token, wanted.keepaliveMs ?? 0, wanted.images ?? true);
  channel?.postMessage({ kind: "owner" } satisfies PeerMsg);
  post({ event: "status", status: toPage(lastStatus, "owner") });
  // Calls this tab had forwarded to the old owner run here now.
  for (const [cid, c] of forwarded) {
    forwarded.delete(cid);
    answer(c.page, () => patiently(c.method, c.args, () => runKeyed(r, c.method, c.args, `${me}:${cid}`)));
  }
}

/** Runs `f` now and hands its answer (awaited, if it is a promise) or its
 * error to `done`. */
function settle(f: () => unknown, done: (ok: unknown, err?: { code: string; message: string }) => void): void {
  let v: unknown;
  try {
    v = f();
  } catch (e) {
    done(null, error(e));
    return;
  }
  if (v instanceof Promise) v.then((ok: unknown) => done(ok ?? null), (e: unknown) => done(null, error(e)));
  else done(v);
}

function answer(page: number, f: () => unknown): void {
  settle(f, (ok, err) => post(err ? { id: page, err } : { id: page, ok }));
}

function onPeer(msg: PeerMsg): void {
  switch (msg.kind) {
    case "call": {
      if (!replica) return;
      const r = replica;
      settle(
        () => patiently(msg.method, msg.args, () => runKeyed(r, msg.method, msg.args, `${msg.from}:${msg.cid}`)),
        (ok, err) => holdReplies || channel?.postMessage((err ? { kind: "reply", to: msg.from, cid: msg.cid, err } : { kind: "reply", to: msg.from, cid: msg.cid, ok }) satisfies PeerMsg),
      );
      return;
    }
    case "reply": {
      if (msg.to !== me) return;
      const c = forwarded.get(msg.cid);
      if (!c) return;
      forwarded.delete(msg.cid);
      if (msg.err) post({ id: c.page, err: msg.err });
      else post({ id: c.page, ok: msg.ok ?? null });
      return;
    }
    case "changes":
      if (!replica) post({ event: "changes", changes: msg.changes });
      return;
    case "status":
      if (!replica) {
        lastStatus = msg.status;
        post({ event: "status", status: toPage(msg.status, "follower") });
        statusSeen?.();
      }
      return;
    case "owner":
      // A new owner: resend what the old one never answered.
      if (!replica) {
        for (const [cid, c] of forwarded) {
          channel?.postMessage({ kind: "call", from: me, cid, method: c.method, args: c.args } satisfies PeerMsg);
        }
        channel?.postMessage({ kind: "hello" } satisfies PeerMsg);
      }
      return;
    case "hello":
      if (replica && lastStatus) channel?.postMessage({ kind: "status", status: lastStatus } satisfies PeerMsg);
      return;
  }
}

async function open(id: number, args: unknown[]): Promise<void> {
  space = args[0] as string;
  memory = Boolean(args[1]);
  root = (args[2] as string | null | undefined) ?? null;
  const key = replicaKey(space, root);
  channel = new BroadcastChannel(`arbor:${key}`);
  channel.onmessage = (e: MessageEvent<PeerMsg>) => onPeer(e.data);
  let owned: () => void = () => {};
  let failed: (e: unknown) => void = () => {};
  ownerReady = new Promise<void>((resolve, reject) => {
    owned = resolve;
    failed = reject;
  });
  // Held until this worker ends (its tab closes): then the next tab's
  // worker gets it and takes over.
  void navigator.locks.request(`arbor-owner:${key}`, async () => {
    try {
      await becomeOwner();
      owned();
    } catch (e) {
      failed(e);
      return;
    }
    await new Promise<never>(() => {});
  });
  // The owner answers `hello` with its status; without an owner (or while
  // this worker becomes it) wait for whichever comes first.
  const seen = new Promise<void>((resolve) => (statusSeen = resolve));
  channel.postMessage({ kind: "hello" } satisfies PeerMsg);
  try {
    await Promise.race([ownerReady, seen]);
  } catch (e) {
    post({ id, err: error(e) });
    return;
  }
  statusSeen = null;
  const role = replica ? "owner" : "follower";
  post({ id, ok: lastStatus ? toPage(lastStatus, role) : null });
}

scope.onmessage = (e: MessageEvent<CallMsg>) => {
  const { id, method, args } = e.data;
  if (method === "open") {
    void open(id, args);
    return;
  }
  if (method === "holdReplies") {
    holdReplies = true;
    post({ id, ok: null });
    return;
  }
  if (method === "connect") wanted = args[0] as ConnectOptions;
  if (method === "disconnect") wanted = null;
  if (replica) {
    const r = replica;
    answer(id, () => patiently(method, args, () => execute(r, method, args)));
    return;
  }
  const cid = nextCid++;
  forwarded.set(cid, { page: id, method, args });
  channel?.postMessage({ kind: "call", from: me, cid, method, args } satisfies PeerMsg);
};
