// React hooks for Arbor's browser API (the package's `/react` entry).
//
// Every hook reads through one store per `Arbor` handle. The store keeps
// each read a component asked for (a child list, a node, the rejected
// ops), listens to the handle's change and status events, reads again only
// what an event can have changed, and tells a read's components only when
// its value really changed (compared as JSON). Components subscribe with
// `useSyncExternalStore`, so a change to node X re-renders the components
// reading X (or a list holding X), never a `useNode(Y)`.
//
// The provider and `useArbor` are in context.ts; the `Inspector`
// component and its `useInspection` hook in inspector.ts.

import { useCallback, useSyncExternalStore } from "react";
import type {
  Arbor,
  Changes,
  NodeId,
  NodeInfo,
  NodeView,
  Peer,
  PresenceState,
  RejectedOp,
  Status,
} from "../src/arbor.js";
import { useArbor } from "./context.js";

export { ArborProvider, useArbor } from "./context.js";
export { Inspector, type InspectorProps, type Inspection, type InspectionOptions, useInspection } from "./inspector.js";

type Listener = () => void;

/** A value that differs from every JSON text: nothing read yet. */
const UNREAD = "\u0000";

/** One read kept fresh for the components that use it. */
class Read<T> {
  value: T | undefined = undefined;
  /** `value` as JSON, to tell a real change from a re-read. */
  json = UNREAD;
  listeners = new Set<Listener>();
  /** The newest call: an older answer that comes late is dropped. */
  seq = 0;
  /** The last call failed (`busy` during a cold start, ...): read again on
   * the next event. */
  failed = false;
  constructor(readonly load: () => Promise<T>) {}
}

interface ChildRead extends Read<NodeView[]> {
  parent: NodeId;
}

interface NodeRead extends Read<NodeInfo | null> {
  id: NodeId;
}

const EMPTY: never[] = [];

class Store {
  readonly #arbor: Arbor;
  readonly #children = new Map<string, ChildRead>();
  readonly #nodes = new Map<NodeId, NodeRead>();
  #rejected: Read<RejectedOp[]> | null = null;
  #status: Status;
  #statusListeners = new Set<Listener>();
  #peers: Peer[];
  #peersListeners = new Set<Listener>();
  #presence: PresenceState | null;
  #presenceJson: string;
  #presenceListeners = new Set<Listener>();
  #inFlight = 0;
  #idle: (() => void)[] = [];

  constructor(arbor: Arbor) {
    this.#arbor = arbor;
    this.#status = arbor.status();
    this.#peers = arbor.peers();
    this.#presence = this.#status.presence;
    this.#presenceJson = JSON.stringify(this.#presence);
    arbor.subscribe((c) => this.#changed(c));
    arbor.onStatus((s) => this.#statusChanged(s));
    arbor.onPeers((p) => {
      this.#peers = p;
      notify(this.#peersListeners);
    });
  }

  childRead(parent: NodeId, limit: number): ChildRead {
    const key = `${parent}/${limit}`;
    let r = this.#children.get(key);
    if (!r) {
      r = Object.assign(new Read(() => this.#arbor.children(parent, { limit })), { parent });
      this.#children.set(key, r);
      this.#refresh(r);
    }
    return r;
  }

  nodeRead(id: NodeId): NodeRead {
    let r = this.#nodes.get(id);
    if (!r) {
      r = Object.assign(new Read(() => this.#arbor.node(id)), { id });
      this.#nodes.set(id, r);
      this.#refresh(r);
    }
    return r;
  }

  rejectedRead(): Read<RejectedOp[]> {
    if (!this.#rejected) {
      this.#rejected = new Read(() => this.#arbor.rejected());
      this.#refresh(this.#rejected);
    }
    return this.#rejected;
  }

  listen(set: Set<Listener>, f: Listener): () => void {
    set.add(f);
    // An unused read is dropped at the next change event, not here: a
    // component that unsubscribes and subscribes again (StrictMode, a
    // re-keyed subtree) keeps its value.
    return () => set.delete(f);
  }

  status(): Status {
    return this.#status;
  }
  statusListeners(): Set<Listener> {
    return this.#statusListeners;
  }
  peers(): Peer[] {
    return this.#peers;
  }
  peersListeners(): Set<Listener> {
    return this.#peersListeners;
  }
  presence(): PresenceState | null {
    return this.#presence;
  }
  presenceListeners(): Set<Listener> {
    return this.#presenceListeners;
  }

  /** Resolves once no read is in flight. */
  idle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((ok) => this.#idle.push(ok));
  }

  /** `value` from a change event (`Changes.nodes`): no read; a read still
   * in flight is older, and dropped. */
  #settle<T>(r: Read<T>, value: T): void {
    r.seq++;
    r.failed = false;
    const json = JSON.stringify(value);
    if (json === r.json) return;
    r.value = value;
    r.json = json;
    notify(r.listeners);
  }

  #refresh<T>(r: Read<T>): void {
    const seq = ++r.seq;
    this.#inFlight++;
    r.load()
      .then(
        (value) => {
          if (seq === r.seq) this.#settle(r, value);
        },
        () => {
          if (seq === r.seq) r.failed = true;
        },
      )
      .finally(() => {
        if (--this.#inFlight > 0) return;
        const waiting = this.#idle;
        this.#idle = [];
        for (const ok of waiting) ok();
      });
  }

  #changed(c: Changes): void {
    // Moved nodes, nodes with new fields, and nodes whose children changed
    // (their `hasChildren` may have flipped).
    const touched = new Set<NodeId>([...c.moved, ...c.fields, ...c.parents]);
    const parents = new Set(c.parents);
    for (const [key, r] of this.#children) {
      if (r.listeners.size === 0) {
        this.#children.delete(key);
        continue;
      }
      if (c.reset || r.failed || parents.has(r.parent) || r.value?.some((v) => touched.has(v.id))) this.#refresh(r);
    }
    // A move can change `parent` and `key` of the moved nodes, and
    // `deleted` of everything below them, which no event lists: every
    // node read is read again after a move, and its components hear of it
    // only if its value changed.
    const anyMove = c.moved.length > 0;
    for (const [id, r] of this.#nodes) {
      if (r.listeners.size === 0) {
        this.#nodes.delete(id);
        continue;
      }
      // What the event carried (its place unchanged if only its fields were).
      const fields = c.values?.[id];
      const moved = c.nodes?.[id];
      const carried = c.reset
        ? undefined
        : moved !== undefined
          ? moved
          : fields && r.value && !anyMove
            ? { ...r.value, fields }
            : undefined;
      if (carried !== undefined) this.#settle(r, carried);
      else if (c.reset || r.failed || anyMove || touched.has(id)) this.#refresh(r);
    }
    if (this.#rejected && (c.reset || this.#rejected.failed)) this.#refresh(this.#rejected);
  }

  #statusChanged(s: Status): void {
    const before = this.#status;
    this.#status = s;
    notify(this.#statusListeners);
    const json = JSON.stringify(s.presence);
    if (json !== this.#presenceJson) {
      this.#presence = s.presence;
      this.#presenceJson = json;
      notify(this.#presenceListeners);
    }
    // Refused ops leave the outbox and join the rejected list.
    const refusedMaybe = s.rejected !== before.rejected || s.outbox !== before.outbox;
    if (this.#rejected && (refusedMaybe || this.#rejected.failed)) this.#refresh(this.#rejected);
    if (s.state !== before.state) {
      // A read refused while the replica was busy (a cold start) is
      // retried when the sync state moves on.
      for (const r of this.#children.values()) if (r.failed) this.#refresh(r);
      for (const r of this.#nodes.values()) if (r.failed) this.#refresh(r);
    }
  }
}

function notify(listeners: Set<Listener>): void {
  for (const f of [...listeners]) f();
}

const stores = new WeakMap<Arbor, Store>();

function storeOf(arbor: Arbor): Store {
  let s = stores.get(arbor);
  if (!s) {
    s = new Store(arbor);
    stores.set(arbor, s);
  }
  return s;
}

function useStore(): Store {
  return storeOf(useArbor());
}

/** The children of `parent` in order (the first `limit`, default 1,000),
 * kept current; `undefined` until the first read answers, or when
 * `parent` is null. Re-renders when the list or a listed child's fields
 * or `hasChildren` change. */
export function useChildren(
  parent: NodeId | null | undefined,
  options: { limit?: number } = {},
): NodeView[] | undefined {
  const store = useStore();
  const limit = options.limit ?? 1000;
  const p = parent ?? null;
  const subscribe = useCallback(
    (f: Listener) => (p === null ? () => {} : store.listen(store.childRead(p, limit).listeners, f)),
    [store, p, limit],
  );
  return useSyncExternalStore(subscribe, () => (p === null ? undefined : store.childRead(p, limit).value));
}

/** A node (`parent`, `key`, `fields`, `deleted`), kept current: `null` if
 * the replica does not have it, `undefined` until the first read answers
 * (or when `id` is null). Re-renders only when that node's value changes. */
export function useNode(id: NodeId | null | undefined): NodeInfo | null | undefined {
  const store = useStore();
  const n = id ?? null;
  const subscribe = useCallback(
    (f: Listener) => (n === null ? () => {} : store.listen(store.nodeRead(n).listeners, f)),
    [store, n],
  );
  return useSyncExternalStore(subscribe, () => (n === null ? undefined : store.nodeRead(n).value));
}

/** The replica's sync status (`Arbor.status()`): state, outbox, progress,
 * storage, role, ... Re-renders on every status event. */
export function useSyncStatus(): Status {
  const store = useStore();
  const subscribe = useCallback((f: Listener) => store.listen(store.statusListeners(), f), [store]);
  return useSyncExternalStore(subscribe, () => store.status());
}

/** The local ops the server refused for good (`Arbor.rejected()`), oldest
 * first: show them, then `useArbor().clearRejected()`. Empty until read;
 * read again whenever `status().rejected` or `status().outbox` changes. */
export function useRejected(): RejectedOp[] {
  const store = useStore();
  const subscribe = useCallback((f: Listener) => store.listen(store.rejectedRead().listeners, f), [store]);
  return useSyncExternalStore(subscribe, () => store.rejectedRead().value ?? EMPTY);
}

/** The other connections to the thoughtspace and their presence states
 * (`Arbor.peers()`); re-renders only when they change (`onPeers`). */
export function usePeers(): Peer[] {
  const store = useStore();
  const subscribe = useCallback((f: Listener) => store.listen(store.peersListeners(), f), [store]);
  return useSyncExternalStore(subscribe, () => store.peers());
}

/** This browser's own presence state as the others see it
 * (`status().presence`), or null; re-renders only when it changes. */
export function usePresence(): PresenceState | null {
  const store = useStore();
  const subscribe = useCallback((f: Listener) => store.listen(store.presenceListeners(), f), [store]);
  return useSyncExternalStore(subscribe, () => store.presence());
}

/** A stable function that sets this browser's presence state
 * (`Arbor.setPresence`; null clears it). It rejects with `ArborError`
 * `presence_too_large` or `bad_presence` as `setPresence` does. */
export function useSetPresence(): (state: PresenceState | null) => Promise<void> {
  const arbor = useArbor();
  return useCallback((state: PresenceState | null) => arbor.setPresence(state), [arbor]);
}

/** Resolves once the hooks' reads for `arbor` have all answered (a change
 * event's re-reads included): for tests, and for code that must know the
 * rendered values are current. */
export function whenIdle(arbor: Arbor): Promise<void> {
  return storeOf(arbor).idle();
}
