// The inspector as a React component (`Inspector`) and its data as a hook
// (`useInspection`): the sync status, the outbox, recent committed ops
// with origin and author, the server's restores, the rejected ops, the
// replica's size, and a node's place with the move that put it there and
// its history, all read from the replica (no network).
//
// It reads again after change and status events, at most every
// `refreshMs` (default 500): a burst of ops costs a few reads and
// renders, not one per op. A component re-renders only when what it
// read changed (compared as JSON).

import { createElement as h, useEffect, useRef, useState, type ReactNode } from "react";
import {
  type Arbor,
  type HistoryEntry,
  type HistoryPage,
  type NodeId,
  type OpJson,
  type OutboxEntry,
  type PlaceReport,
  type RejectedOp,
  type ReplicaSize,
  ROOT,
  type RowCount,
  type Status,
  TRASH,
} from "../src/arbor.js";
import { useArbor } from "./context.js";

/** What `useInspection` read, all at one moment. */
export interface Inspection {
  /** The status when it was read (`Arbor.status()`). */
  status: Status;
  size: ReplicaSize;
  /** The first `limit` pending ops, oldest first. */
  outbox: OutboxEntry[];
  /** The newest `limit` committed ops. */
  recent: HistoryPage;
  /** The restores among the newest 10,000 committed ops (at most `limit`). */
  restores: HistoryPage;
  rejected: RejectedOp[];
  /** The node asked for: its place and why (null: the replica does not
   * have it) and its newest `limit` ops; null when no node was asked for. */
  node: { id: NodeId; place: PlaceReport | null; history: HistoryPage } | null;
}

/** Options of `useInspection` and `Inspector`. */
export interface InspectionOptions {
  /** Entries read per list (default 50, at most 1,000). */
  limit?: number;
  /** The least time between two reads, in ms (default 500). */
  refreshMs?: number;
}

/** The inspector's data for `node` (null: none), read now and again after
 * change and status events, at most every `refreshMs`; `undefined` until
 * the first read answers. A read refused while the replica is busy (a cold
 * start) keeps the last value and is retried on the next event. */
export function useInspection(node: NodeId | null, options: InspectionOptions = {}): Inspection | undefined {
  const arbor = useArbor();
  const limit = Math.min(1000, Math.max(1, options.limit ?? 50));
  const refreshMs = options.refreshMs ?? 500;
  const [value, setValue] = useState<Inspection | undefined>(undefined);
  useEffect(() => {
    let json = "";
    let timer: ReturnType<typeof setTimeout> | null = null;
    let running = false;
    let dirty = false;
    let last = -Infinity;
    let stopped = false;
    const run = async () => {
      running = true;
      dirty = false;
      last = performance.now();
      try {
        const next = await read(arbor, node, limit);
        const text = JSON.stringify(next);
        if (!stopped && text !== json) {
          json = text;
          setValue(next);
        }
      } catch {
        // Busy (a cold start): the next status event reads again.
      } finally {
        running = false;
        if (dirty) schedule();
      }
    };
    const schedule = () => {
      if (stopped) return;
      dirty = true;
      if (timer !== null || running) return;
      timer = setTimeout(
        () => {
          timer = null;
          void run();
        },
        Math.max(0, last + refreshMs - performance.now()),
      );
    };
    const offChanges = arbor.subscribe(schedule);
    const offStatus = arbor.onStatus(schedule);
    schedule();
    return () => {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      offChanges();
      offStatus();
    };
  }, [arbor, node, limit, refreshMs]);
  return value;
}

async function read(arbor: Arbor, node: NodeId | null, limit: number): Promise<Inspection> {
  const status = arbor.status();
  const [size, outbox, recent, restores, rejected] = await Promise.all([
    arbor.size(),
    arbor.outbox(limit),
    arbor.recentOps({ limit }),
    arbor.restores({ limit }),
    arbor.rejected(),
  ]);
  let looked: Inspection["node"] = null;
  if (node !== null) {
    const place = await arbor.place(node);
    const history = place === null ? { entries: [], nextBefore: null, headSeq: recent.headSeq } : await arbor.history(node, { local: true, limit });
    looked = { id: node, place, history };
  }
  return { status, size, outbox, recent, restores, rejected, node: looked };
}

/** Props of `Inspector`. */
export interface InspectorProps extends InspectionOptions {
  /** The node to explain (the application's selection, say); a node id
   * typed into the inspector's own field takes its place while the field
   * is not empty. */
  node?: NodeId | null;
  /** The root element's class (default "arbor-inspector"). */
  className?: string;
}

/** A panel for developers: the sync status, the outbox, recent ops with
 * origin and author, restores, rejected ops, the replica's size, and why
 * a node is where it is (its place, the move that put it there, its
 * history). Unstyled: elements carry class names (`arbor-inspector`,
 * `section`, `dl`, `ol`) and `data-testid`s. Clicking a node id in a list
 * looks that node up. */
export function Inspector(props: InspectorProps): ReactNode {
  const [typed, setTyped] = useState("");
  const node = typed.trim() !== "" ? typed.trim().toLowerCase() : (props.node ?? null);
  const data = useInspection(node, { limit: props.limit, refreshMs: props.refreshMs });
  const renders = useRef(0);
  renders.current++;
  const look = (id: NodeId) => setTyped(id);
  const op = (o: OpJson, how: How = {}) => opLine(o, how, look);
  const root = (...kids: ReactNode[]) =>
    h("div", { className: props.className ?? "arbor-inspector", "data-testid": "inspector", "data-renders": renders.current }, ...kids);
  const input = h("input", {
    "data-testid": "inspector-node-input",
    placeholder: props.node ? `node id (empty: ${props.node})` : "node id",
    value: typed,
    spellCheck: false,
    onChange: (e: { target: { value: string } }) => setTyped(e.target.value),
  });
  if (!data) return root(h("p", null, "Reading the replica…"), input);
  const { status: s, size, outbox, recent, restores, rejected } = data;
  return root(
    section(
      "Status",
      "inspector-status",
      { "data-state": s.state, "data-outbox": s.outbox, "data-rejected": s.rejected },
      facts([
        ["state", s.state + (s.error ? ` (${s.error})` : "")],
        ["cursor", s.cursor === null ? "none" : `seq ${s.cursor}`],
        ["outbox", `${s.outbox} pending`],
        ["rejected", String(s.rejected)],
        ["conflicts", String(size.conflicts)],
        ["peers", String(s.peers.length)],
        ["role", s.role],
        ["storage", s.storage],
      ]),
    ),
    section("Node", "inspector-node", { "data-node": data.node?.id ?? "" }, input, nodeView(data.node, op, look)),
    section(
      "Outbox",
      "inspector-outbox",
      { "data-count": s.outbox },
      list(
        outbox.map((e) => h("li", { key: e.op.stamp, "data-testid": "inspector-outbox-op", "data-node": e.op.node, "data-applied": String(e.applied) }, op(e.op, { from: e.from, applied: e.applied, pending: true }))),
        "Nothing pending.",
      ),
    ),
    section("Recent ops", "inspector-recent", {}, list(recent.entries.map((e) => entry(e, "inspector-recent-op", op)), "No committed op recorded yet.")),
    section("Restores", "inspector-restores", { "data-count": restores.entries.length }, list(restores.entries.map((e) => entry(e, "inspector-restore", op)), "None among the last 10,000 ops.")),
    section(
      "Rejected ops",
      "inspector-rejected",
      { "data-count": rejected.length },
      list(
        rejected.map((r) =>
          h("li", { key: r.op.stamp, "data-testid": "inspector-rejected-op", "data-code": r.code, "data-node": r.op.node, title: r.message }, `${r.code}: `, op(r.op as OpJson)),
        ),
        "None.",
      ),
    ),
    section(
      "Size",
      "inspector-size",
      { "data-nodes": size.nodes.rows, "data-bytes": size.databaseBytes },
      facts([
        ["database", `${size.databaseBytes.toLocaleString()} bytes`],
        ["nodes", count(size.nodes)],
        ["fields", count(size.fields)],
        ["move log", count(size.log)],
        ["history", count(size.history) + (size.historyStart === null ? "" : ` (from seq ${size.historyStart})`)],
        ["horizon", size.horizon ?? "none"],
      ]),
    ),
  );
}

type Op = (o: OpJson, how?: How) => ReactNode;

interface How {
  from?: { parent: NodeId } | null;
  applied?: boolean | null;
  origin?: "new" | "restore";
  pending?: boolean;
}

function nodeView(n: Inspection["node"], op: Op, look: (id: NodeId) => void): ReactNode {
  if (n === null) return h("p", null, "No node: type an id, or click one.");
  if (n.place === null) return h("p", { "data-testid": "inspector-node-missing" }, `This replica does not have ${n.id}.`);
  const p = n.place;
  const m = p.lastMove;
  const why =
    m === null
      ? h("p", { "data-testid": "inspector-last-move", "data-kind": "unknown" }, "Placed before this replica's record starts.")
      : h(
          "p",
          {
            "data-testid": "inspector-last-move",
            "data-pending": String(m.pending),
            "data-seq": m.seq ?? "",
            "data-author": m.author ?? "",
            "data-origin": m.origin ?? "",
            "data-parent": m.parent,
            title: `stamp ${m.stamp}`,
          },
          "Put under ",
          ref(m.parent, look),
          ...(m.from ? [" from under ", ref(m.from.parent, look)] : [m.inLog ? " (its create)" : ""]),
          " by ",
          m.pending
            ? "this replica's own move, not yet on the server"
            : m.origin === "restore"
              ? `the server's restore rule, at seq ${m.seq}`
              : m.seq === null
                ? "a move made before this replica's record starts"
                : `${m.author ?? "an unclaimed replica"}'s move, at seq ${m.seq}`,
          ".",
        );
  return h(
    "div",
    null,
    facts([
      ["path", [...p.ancestors].reverse().map(short).concat(short(p.id)).join(" › ")],
      ["key", p.key ?? "none"],
      ["deleted", p.deleted ? "yes" : "no"],
    ]),
    why,
    list(n.history.entries.map((e) => entry(e, "inspector-node-op", op)), "No committed op of it recorded here."),
  );
}

function entry(e: HistoryEntry, testid: string, op: Op): ReactNode {
  return h(
    "li",
    { key: e.seq, "data-testid": testid, "data-seq": e.seq, "data-author": e.author ?? "", "data-origin": e.origin, "data-node": e.op.node, "data-applied": String(e.applied) },
    `${e.seq} ${e.origin === "restore" ? "restore rule" : (e.author ?? "?")}: `,
    op(e.op, { origin: e.origin, applied: e.applied }),
  );
}

/** What an op does, in words, its node ids as buttons that look them up. */
function opLine(o: OpJson, how: How, look: (id: NodeId) => void): ReactNode {
  const node = ref(o.node, look);
  if (o.kind === "set") {
    return h("span", null, o.value === null ? `cleared ${o.field} of ` : `set ${o.field} of `, node, o.value === null ? "" : ` to “${o.value}”`, how.applied === false ? " (lost: a later write won)" : "");
  }
  const note = how.applied === false ? " (skipped: a cycle)" : how.pending && how.applied === null ? " (not shown: waiting to be re-stamped)" : "";
  const to = ref(o.parent, look);
  if (o.parent === TRASH) return h("span", null, "deleted ", node, note);
  if (how.origin === "restore") return h("span", null, "brought ", node, " back under ", to);
  if (how.pending && how.from === null && how.applied === true) return h("span", null, "created ", node, " under ", to, note);
  if (how.from?.parent === TRASH) return h("span", null, "restored ", node, " under ", to, note);
  return h("span", null, "moved ", node, " under ", to, note);
}

function ref(id: NodeId, look: (id: NodeId) => void): ReactNode {
  if (id === ROOT || id === TRASH) return id === ROOT ? "ROOT" : "TRASH";
  return h("button", { type: "button", "data-look": id, title: id, onClick: () => look(id) }, short(id));
}

function short(id: NodeId): string {
  return id === ROOT ? "ROOT" : id === TRASH ? "TRASH" : id.slice(0, 8);
}

function section(title: string, testid: string, attrs: Record<string, unknown>, ...kids: ReactNode[]): ReactNode {
  return h("section", { "data-testid": testid, ...attrs }, h("h3", null, title), ...kids);
}

function facts(rows: [string, string][]): ReactNode {
  return h("dl", null, ...rows.flatMap(([k, v]) => [h("dt", { key: `t${k}` }, k), h("dd", { key: `d${k}`, "data-fact": k }, v)]));
}

function list(items: ReactNode[], none: string): ReactNode {
  return items.length === 0 ? h("p", null, none) : h("ol", null, ...items);
}

function count(c: RowCount): string {
  return c.exact ? c.rows.toLocaleString() : `over ${c.rows.toLocaleString()}`;
}
