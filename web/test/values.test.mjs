// Lookups by value in the browser client, in real headless Chromium
// against a real `arbor-server dev`: two browsers (alice and bob) on one
// thoughtspace.
//
// - `holders` finds a value's nodes compared normalized, from the replica
//   and from the server alike, in pages; a deleted holder is left out.
// - `search` finds registers by words (the last a prefix), the same from
//   the replica and from the server, within a subtree too.
// - Two children with the same value made offline on both sides: after
//   sync both browsers name the same canonical one (`childByValue`), and
//   `mergeChildrenByValue` in one browser leaves one child, with every
//   grandchild, in both.
//
//   node --test --test-concurrency=1 web/test/values.test.mjs
//   (after scripts/build-web.sh and cargo build -p arbor-sync-server)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { aliceAndBob, drained, setOffline, startServer, until } from "./harness.mjs";

const ROOT = "00000000-0000-0000-0000-000000000000";
let server;
let alice;
let bob;
let a;
let b;

before(async () => {
  server = await startServer();
  ({ alice, bob, a, b } = await aliceAndBob(server, "demo"));
});

after(async () => {
  await alice?.close();
  await bob?.close();
  await server?.stop();
});



/** Every holder of `value` in `title`, page by page. */
function allHolders(page, value, server) {
  return page.evaluate(
    async ({ value, server }) => {
      const out = [];
      let after;
      for (;;) {
        const p = await window.arbor.holders("title", value, { after, limit: 2, server });
        out.push(...p.holders.map((h) => `${h.id} in ${h.parent}`));
        if (p.next === null) return out;
        after = p.next;
      }
    },
    { value, server },
  );
}

test("holders are found by normalized value, locally and from the server", async () => {
  const made = await a.evaluate(async (root) => {
    const x = await window.arbor.create(root, "last", { title: "Contexts" });
    const ids = [];
    for (const t of ["Shared  Thought", "shared thought", " SHARED THOUGHT ", "other"]) {
      ids.push(await window.arbor.create(x, "last", { title: t }));
    }
    return { x, ids };
  }, ROOT);
  await drained(a, "alice");
  const local = await allHolders(a, "shared thought", false);
  assert.equal(local.length, 3);
  assert.ok(local.every((l) => l.endsWith(`in ${made.x}`)));
  assert.deepEqual(await allHolders(a, "SHARED thought", true), local);
  await until("bob has them", async () => (await allHolders(b, "shared thought", false)).length === 3);
  // Deleted: left out everywhere.
  await a.evaluate((id) => window.arbor.delete(id), made.ids[0]);
  await drained(a, "alice");
  assert.equal((await allHolders(a, "shared thought", false)).length, 2);
  assert.equal((await allHolders(a, "shared thought", true)).length, 2);
  await until("bob sees the delete", async () => (await allHolders(b, "shared thought", false)).length === 2);
});

test("duplicate children made on two devices have one canonical child, and merge", async () => {
  const p = await a.evaluate((root) => window.arbor.create(root, "last", { title: "with attributes" }), ROOT);
  await drained(a, "alice");
  await until("bob has the parent", () => b.evaluate(async (p) => (await window.arbor.node(p)) !== null, p));
  for (const page of [a, b]) await setOffline(page, true);
  const xa = await a.evaluate(async (p) => {
    const x = await window.arbor.create(p, "last", { title: "=pin" });
    await window.arbor.create(x, "last", { title: "from alice" });
    return x;
  }, p);
  const xb = await b.evaluate(async (p) => {
    const x = await window.arbor.create(p, "last", { title: "=Pin " });
    await window.arbor.create(x, "last", { title: "from bob" });
    return x;
  }, p);
  for (const page of [a, b]) await setOffline(page, false);
  const both = (page) => page.evaluate((p) => window.arbor.childrenByValue(p, "title", "=PIN"), p);
  await until("both see both", async () => (await both(a)).length === 2 && (await both(b)).length === 2);
  assert.deepEqual(await both(a), await both(b));
  // Both made under an empty parent offline: either may sort first, and
  // both browsers agree on which.
  const [canon, dup] = await both(a);
  assert.deepEqual(new Set([canon, dup]), new Set([xa, xb]));
  assert.equal(await b.evaluate((p) => window.arbor.childByValue(p, "title", "=pin"), p), canon);

  const report = await a.evaluate((p) => window.arbor.mergeChildrenByValue(p, "title", "=pin"), p);
  assert.deepEqual(report, { canonical: canon, merged: 1 });
  await drained(a, "alice");
  await until("bob sees the merge", async () => (await both(b)).length === 1);
  const kids = await b.evaluate(async (x) => (await window.arbor.children(x)).map((c) => c.fields.title), canon);
  assert.deepEqual(kids, canon === xb ? ["from bob", "from alice"] : ["from alice", "from bob"]);
});

test("search finds words as they are typed, locally and from the server, within a subtree", async () => {
  const made = await a.evaluate(async (root) => {
    const s = await window.arbor.create(root, "last", { title: "Search section" });
    const x = await window.arbor.create(s, "last", { title: "Quarterly budget review" });
    const y = await window.arbor.create(root, "last", { title: "budgeting, elsewhere" });
    return { s, x, y };
  }, ROOT);
  await drained(a, "alice");
  const ids = (hits) => hits.map((h) => h.id).sort();
  for (const server of [false, true]) {
    const all = await a.evaluate((server) => window.arbor.search("BUDG", { server }), server);
    assert.deepEqual(ids(all), [made.x, made.y].sort(), `server: ${server}`);
    const typed = await a.evaluate((server) => window.arbor.search("budget rev", { server }), server);
    assert.deepEqual(typed.map((h) => [h.id, h.parent, h.field, h.value]), [[made.x, made.s, "title", "Quarterly budget review"]]);
    const within = await a.evaluate(({ server, root }) => window.arbor.search("budget", { server, root }), { server, root: made.s });
    assert.deepEqual(ids(within), [made.x]);
    assert.deepEqual(await a.evaluate((server) => window.arbor.search('" ( *', { server }), server), []);
  }
  await until("bob finds it too", async () => (await b.evaluate(() => window.arbor.search("quarterly"))).length === 1);
});
