// The outline: every row reads its own node (`useNode`) and its own
// children (`useChildren`), behind `memo`, so an edit re-renders only the
// rows and lists it touched. `renders` counts the renders of each row (by
// node id) and of each list (`children:<parent>`).
import { memo, useEffect, useState, type FormEvent } from "react";
import { ROOT, type NodeId } from "@arbor/web";
import {
  useArbor,
  useChildren,
  useNode,
  usePeers,
  usePresence,
  useRejected,
  useSetPresence,
  useSyncStatus,
} from "@arbor/web/react";

export const renders: Record<string, number> = {};
function counted(key: string): void {
  renders[key] = (renders[key] ?? 0) + 1;
}

export function App({ user }: { user: string }) {
  return (
    <main>
      <Header user={user} />
      <Rejected />
      <AddForm />
      <section data-testid="outline">
        <Children parent={ROOT} />
      </section>
    </main>
  );
}

function Header({ user }: { user: string }) {
  const status = useSyncStatus();
  const peers = usePeers();
  const me = usePresence();
  const setPresence = useSetPresence();
  useEffect(() => {
    setPresence({ user }).catch((e) => console.error("setPresence:", e));
  }, [user, setPresence]);
  return (
    <header>
      <span data-testid="state" data-state={status.state}>
        {status.state}
      </span>
      <span data-testid="outbox" data-count={status.outbox}>
        {status.outbox} pending
      </span>
      <span data-testid="me" title="my presence, as the others see it">
        {me?.user ?? "(no presence)"}
      </span>
      <span data-testid="peers" data-count={peers.length}>
        {peers.length === 0 ? "alone" : `with ${peers.map((p) => p.state?.user ?? p.sub).join(", ")}`}
      </span>
    </header>
  );
}

/** The edits the server refused for good: the application must show them. */
function Rejected() {
  const rejected = useRejected();
  const arbor = useArbor();
  if (rejected.length === 0) return null;
  return (
    <section data-testid="rejected" data-count={rejected.length}>
      {rejected.length} edit(s) refused by the server:
      <ul>
        {rejected.map((r, i) => (
          <li key={i}>
            {r.op.kind} of {r.op.node}: {r.code} ({r.message})
          </li>
        ))}
      </ul>
      <button data-testid="dismiss" onClick={() => void arbor.clearRejected()}>
        Dismiss
      </button>
    </section>
  );
}

function AddForm() {
  const arbor = useArbor();
  const [title, setTitle] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (title.trim() === "") return;
    arbor.create(ROOT, "last", { title }).catch((err) => console.error("create:", err));
    setTitle("");
  };
  return (
    <form onSubmit={submit}>
      <input data-testid="add-title" value={title} placeholder="New item" onChange={(e) => setTitle(e.target.value)} />
      <button type="submit" data-testid="add">
        Add
      </button>
    </form>
  );
}

const Children = memo(function Children({ parent }: { parent: NodeId }) {
  counted(`children:${parent}`);
  const kids = useChildren(parent);
  if (!kids || kids.length === 0) return null;
  return (
    <ul>
      {kids.map((k) => (
        <Row key={k.id} id={k.id} />
      ))}
    </ul>
  );
});

const Row = memo(function Row({ id }: { id: NodeId }) {
  counted(id);
  const node = useNode(id);
  const arbor = useArbor();
  const title = node?.fields.title ?? "";
  const fail = (what: string) => (e: unknown) => console.error(`${what}:`, e);
  return (
    <li data-testid="row" data-id={id} data-title={title}>
      <div>
        <input
          className="title"
          key={title}
          defaultValue={title}
          // Keep the rest of the state (the user's name): read, not subscribed.
          onFocus={() => arbor.setPresence({ ...arbor.status().presence, focus: id }).catch(fail("setPresence"))}
          onBlur={(e) => {
            if (e.target.value !== title) arbor.set(id, "title", e.target.value).catch(fail("set"));
          }}
          onKeyDown={(e) => {
            if (e.key === "Enter") e.currentTarget.blur();
          }}
        />
        <button title="Add a child" onClick={() => arbor.create(id, "last", { title: "" }).catch(fail("create"))}>
          +
        </button>
        <button title="Delete" data-testid="delete" onClick={() => arbor.delete(id).catch(fail("delete"))}>
          ×
        </button>
      </div>
      <Children parent={id} />
    </li>
  );
});
