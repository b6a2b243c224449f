// Undo and redo, the conflict list, a node's history and reverting a
// subtree in the browser client and the demo, in real headless Chromium
// against a real `arbor-server dev`: two browsers (alice and bob, two
// tokens) on one thoughtspace.
//
// - Undo and redo of a create and of a delete round-trip, and every step
//   reaches the other browser; a follower tab's undo runs in the owner.
// - A concurrent field overwrite lands in the losing side's conflict list
//   (and its change events), and its demo shows it in the conflicts badge.
// - `history` lists a node's ops, newest first, in pages.
// - `revertSubtree` brings a subtree back to a past seq, in both browsers.
// - The demo's keys: Ctrl+Z undoes a create with its typed title as one
//   step, Ctrl+Shift+Z and Ctrl+Y redo it; a multi-select drag is one step.
//
//   node --test --test-concurrency=1 web/test/undo.test.mjs
//   (after scripts/build-web.sh and cargo build -p arbor-sync-server)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { aliceAndBob, drained, openDemo, setOffline, startServer, titles, until } from "./harness.mjs";

const ROOT = "00000000-0000-0000-0000-000000000000";
const TRASH = "ffffffff-ffff-ffff-ffff-ffffffffffff";
const SPACE = "demo"; // the one thoughtspace `arbor-server dev` creates
let server;
let alice;
let bob;
let a;
let b;

before(async () => {
  server = await startServer();
  ({ alice, bob, a, b } = await aliceAndBob(server, SPACE));
});

after(async () => {
  await alice?.close();
  await bob?.close();
  await server?.stop();
});

/** `node(id)` in `page`'s replica. */
function nodeIn(page, id) {
  return page.evaluate((id) => window.arbor.node(id), id);
}



/** The ids of `parent`'s children in `page`'s replica. */
function childIds(page, parent) {
  return page.evaluate(async (p) => (await window.arbor.children(p)).map((c) => c.id), parent);
}

test("undo and redo of a create and of a delete round-trip and reach the other browser", async () => {
  // A create with a field, made as one step.
  const x = await a.evaluate(async (root) => {
    await window.arbor.beginStep();
    const id = await window.arbor.create(root, "last", { title: "undo me" });
    await window.arbor.set(id, "note", "with a note");
    await window.arbor.endStep();
    return id;
  }, ROOT);
  assert.equal(await a.evaluate(() => window.arbor.canUndo()), true);
  assert.equal(await a.evaluate(() => window.arbor.canRedo()), false);
  await until("bob has the node", async () => (await titles(b)).includes("undo me"));

  // Undo: the node goes to the trash (its fields cleared), in both browsers.
  const undone = await a.evaluate(() => window.arbor.undo());
  assert.ok(undone.reverted >= 1, `reverted ${undone.reverted}`);
  assert.deepEqual(undone.kept, []);
  const ax = await nodeIn(a, x);
  assert.equal(ax.deleted, true);
  assert.equal(ax.fields.title, undefined);
  assert.equal(ax.fields.note, undefined);
  assert.equal(await a.evaluate(() => window.arbor.canRedo()), true);
  await until("bob lost the node", async () => !(await titles(b)).includes("undo me") && (await nodeIn(b, x))?.deleted === true);

  // Redo: back under ROOT with both fields, in both browsers.
  const redone = await a.evaluate(() => window.arbor.redo());
  assert.ok(redone.reverted >= 1);
  assert.equal(await a.evaluate(() => window.arbor.canRedo()), false);
  const ax2 = await nodeIn(a, x);
  assert.equal(ax2.parent, ROOT);
  assert.deepEqual(ax2.fields, { title: "undo me", note: "with a note" });
  await until("bob has the node back with its fields", async () => {
    const n = await nodeIn(b, x);
    return n?.parent === ROOT && n.fields.title === "undo me" && n.fields.note === "with a note";
  });

  // A delete of a section (a node with a child): undo brings the whole
  // section back, redo deletes it again.
  const [s, child] = await a.evaluate(async (root) => {
    const s = await window.arbor.create(root, "last", { title: "section" });
    const c = await window.arbor.create(s, "last", { title: "inside the section" });
    return [s, c];
  }, ROOT);
  await until("bob has the section", async () => (await nodeIn(b, child))?.parent === s);
  await a.evaluate((s) => window.arbor.delete(s), s);
  await until("bob sees the section deleted", async () => (await nodeIn(b, s))?.deleted === true);
  const restored = await a.evaluate(() => window.arbor.undo());
  assert.equal(restored.reverted, 1);
  assert.equal((await nodeIn(a, s)).parent, ROOT);
  await until("bob has the section back, with its child", async () => {
    const [n, c] = [await nodeIn(b, s), await nodeIn(b, child)];
    return n?.parent === ROOT && !n.deleted && c?.parent === s && !c.deleted;
  });
  assert.ok((await childIds(b, ROOT)).includes(s));
  await a.evaluate(() => window.arbor.redo());
  assert.equal((await nodeIn(a, s)).parent, TRASH);
  await until("bob sees the section deleted again", async () => (await nodeIn(b, s))?.parent === TRASH);

  // Nothing to redo now; undo is still there (the delete).
  assert.equal(await a.evaluate(() => window.arbor.redo()), null);
  assert.equal(await a.evaluate(() => window.arbor.canUndo()), true);
});

test("a follower tab's undo, history and conflicts calls run in the owner tab", async () => {
  const follower = await openDemo(alice.context, server, SPACE, "alice");
  try {
    assert.equal(await follower.evaluate(() => window.arbor.status().role), "follower");
    const y = await follower.evaluate(async (root) => window.arbor.create(root, "last", { title: "made in the follower" }), ROOT);
    await until("the owner tab has it", async () => (await nodeIn(a, y))?.parent === ROOT);
    assert.equal(await follower.evaluate(() => window.arbor.canUndo()), true);
    const r = await follower.evaluate(() => window.arbor.undo());
    assert.equal(r.reverted, 2); // the node and its title
    await until("undone in the owner tab", async () => (await nodeIn(a, y))?.deleted === true);
    await until("undone in bob's browser", async () => (await nodeIn(b, y))?.deleted === true);
    // A call that reads the server, forwarded and answered.
    await drained(a, "alice");
    const page = await follower.evaluate((y) => window.arbor.history(y), y);
    assert.ok(page.entries.length >= 2, `${page.entries.length} entries`);
    assert.ok(Array.isArray(await follower.evaluate(() => window.arbor.conflicts(5))));
  } finally {
    await follower.close();
  }
});

test("a concurrent overwrite of a field shows in the losing side's conflict list and badge", async () => {
  const n = await a.evaluate((root) => window.arbor.create(root, "last", { title: "contested" }), ROOT);
  await until("bob has it", async () => (await nodeIn(b, n))?.fields.title === "contested");
  await b.evaluate(() => window.arbor.clearConflicts());
  assert.deepEqual(await b.evaluate(() => window.arbor.conflicts()), []);

  // Bob writes offline; alice writes after him without knowing of it, so
  // her value wins last-writer-wins and bob's is lost.
  await setOffline(b, true);
  await b.evaluate((n) => window.arbor.set(n, "title", "bob's title"), n);
  await a.evaluate((n) => window.arbor.set(n, "title", "alice's title"), n);
  await drained(a, "alice");
  await b.evaluate(() => {
    window.__conflictEvents = [];
    window.arbor.subscribe((c) => {
      if (c.conflicts.length > 0) window.__conflictEvents.push(...c.conflicts);
    });
  });
  await setOffline(b, false);
  await until("bob converged on alice's title", async () => (await nodeIn(b, n))?.fields.title === "alice's title");
  await drained(b, "bob");

  const list = await until("bob's conflict list has it", async () => {
    const l = await b.evaluate(() => window.arbor.conflicts(10));
    return l.length > 0 ? l : null;
  });
  const c = list.find((c) => c.node === n);
  assert.ok(c, JSON.stringify(list));
  assert.equal(c.kind, "field_overwritten");
  assert.equal(c.field, "title");
  assert.equal(c.lost, "bob's title");
  assert.equal(c.kept, "alice's title");
  assert.equal(c.by, "alice");
  assert.equal(typeof c.seq, "number");
  // The change event that applied alice's write carried it.
  const events = await b.evaluate(() => window.__conflictEvents);
  assert.ok(events.some((e) => e.node === n && e.kind === "field_overwritten" && e.by === "alice"), JSON.stringify(events));
  // Alice, the winner, has no conflict for it.
  assert.equal((await a.evaluate(() => window.arbor.conflicts(100))).some((c) => c.node === n), false);

  // Bob's demo shows the badge; its list names alice; dismiss empties it.
  const badge = b.locator('[data-testid="conflicts"]');
  await until("bob's conflicts badge shows", () => badge.isVisible());
  assert.equal(await badge.getAttribute("data-count"), String(list.length));
  await badge.click();
  const item = b.locator(`[data-testid="conflict"][data-node="${n}"]`);
  await until("the conflict is listed", () => item.isVisible());
  const text = await item.textContent();
  assert.match(text, /alice/);
  assert.match(text, /alice's title/);
  await b.click('[data-testid="conflicts-dismiss"]');
  await until("the badge goes", async () => !(await badge.isVisible()));
  assert.deepEqual(await b.evaluate(() => window.arbor.conflicts()), []);
});

test("history lists a node's ops newest first, in pages, from the server or offline from the replica", async () => {
  const [p, q] = await a.evaluate(async (root) => {
    const p = await window.arbor.create(root, "last", { title: "a parent" });
    const q = await window.arbor.create(root, "last", { title: "v1" });
    await window.arbor.set(q, "title", "v2");
    await window.arbor.move(q, p, "last");
    await window.arbor.set(q, "title", "v3");
    return [p, q];
  }, ROOT);
  await drained(a, "alice");
  const page = await a.evaluate((q) => window.arbor.history(q), q);
  const e = page.entries;
  assert.equal(e.length, 5, JSON.stringify(e));
  // Newest first: set v3, move under p, set v2, then the create (a move
  // under ROOT and the set of v1, which share its stamp's order).
  const what = (x) => (x.op.kind === "set" ? `set ${x.op.value}` : `move ${x.op.parent === p ? "p" : x.op.parent === ROOT ? "root" : x.op.parent}`);
  assert.deepEqual(e.slice(0, 3).map(what), ["set v3", "move p", "set v2"]);
  assert.deepEqual(e.slice(3).map(what).sort(), ["move root", "set v1"]);
  for (let i = 1; i < e.length; i++) assert.ok(e[i - 1].seq > e[i].seq, "newest first");
  assert.ok(e.every((x) => x.author === "alice" && x.origin === "new" && x.op.node === q));
  assert.ok(e.filter((x) => x.op.kind === "move").every((x) => x.applied === true));
  assert.ok(e.filter((x) => x.op.kind === "set").every((x) => x.applied === null));
  assert.equal(e[0].op.kind, "set");
  assert.equal(e[0].op.value, "v3");
  assert.equal(e[1].op.kind, "move");
  assert.equal(e[1].op.parent, p);
  assert.ok(page.headSeq >= e[0].seq);
  assert.equal(page.nextBefore, null);

  // Pages of two: the same entries, in order.
  const first = await a.evaluate((q) => window.arbor.history(q, { limit: 2 }), q);
  assert.equal(first.entries.length, 2);
  assert.equal(typeof first.nextBefore, "number");
  const second = await a.evaluate(([q, before]) => window.arbor.history(q, { before, limit: 2 }), [q, first.nextBefore]);
  assert.deepEqual([...first.entries, ...second.entries].map((x) => x.seq), e.slice(0, 4).map((x) => x.seq));

  // Offline it cannot read the server: a typed error.
  await setOffline(a, true);
  try {
    const err = await a.evaluate((q) => window.arbor.history(q).then(() => null, (e) => ({ name: e.name, code: e.code })), q);
    assert.deepEqual(err, { name: "ArborError", code: "unavailable" });
    // The replica's own record answers offline: the same entries (this
    // replica has synced since before q existed).
    const local = await a.evaluate((q) => window.arbor.history(q, { local: true }), q);
    assert.deepEqual(local.entries, e);
    assert.equal(local.nextBefore, null);
    const older = await a.evaluate(([q, before]) => window.arbor.history(q, { local: true, before, limit: 2 }), [q, first.nextBefore]);
    assert.deepEqual(older.entries, second.entries);
  } finally {
    await setOffline(a, false);
  }
});

test("subtreeAt reads a subtree at a past seq, and revertSubtree brings it back, in both browsers", async () => {
  const [r, x, y] = await a.evaluate(async (root) => {
    const r = await window.arbor.create(root, "last", { title: "revert root" });
    const x = await window.arbor.create(r, "last", { title: "x" });
    const y = await window.arbor.create(r, "last", { title: "y" });
    return [r, x, y];
  }, ROOT);
  await drained(a, "alice");
  const seq = (await a.evaluate((r) => window.arbor.history(r, { limit: 1 }), r)).headSeq;

  // Then: x renamed and moved out, y deleted, z created inside, the root renamed.
  const z = await a.evaluate(
    async ([root, r, x, y]) => {
      await window.arbor.set(x, "title", "x changed");
      await window.arbor.move(x, root, "last");
      await window.arbor.delete(y);
      const z = await window.arbor.create(r, "first", { title: "z" });
      await window.arbor.set(r, "title", "revert root renamed");
      return z;
    },
    [ROOT, r, x, y],
  );
  await drained(a, "alice");
  await until("bob sees the edits", async () => (await nodeIn(b, z))?.parent === r && (await nodeIn(b, y))?.deleted === true);

  // What the subtree was then, read without changing anything: x and y
  // under r with their titles, z not yet, the root's title then.
  const past = await a.evaluate(([r, seq]) => window.arbor.subtreeAt(r, seq), [r, seq]);
  assert.equal(past.seq, seq);
  assert.equal(past.root, r);
  assert.equal(past.present, true);
  assert.deepEqual(past.nodes.map((n) => n.id).sort(), [x, y].sort());
  assert.ok(past.nodes.every((n) => n.parent === r && typeof n.key === "string"));
  const titleThen = (id) => past.registers.find((g) => g.node === id && g.field === "title")?.value;
  assert.deepEqual([titleThen(r), titleThen(x), titleThen(y)], ["revert root", "x", "y"]);
  assert.deepEqual(past.elsewhere.map((e) => e.id), [z]);
  assert.equal(past.elsewhere[0].place, undefined);
  assert.equal((await nodeIn(a, z))?.parent, r, "reading the past changed nothing");

  const report = await a.evaluate(([r, seq]) => window.arbor.revertSubtree(r, seq), [r, seq]);
  assert.equal(report.seq, seq);
  assert.equal(report.moved, 3, JSON.stringify(report)); // x and y back, z out
  assert.equal(report.set, 2, JSON.stringify(report)); // x's title and the root's (z was not in it then: only moved out)
  assert.deepEqual(report.skipped, []);

  const check = async (page) => {
    const kids = await page.evaluate(async (r) => (await window.arbor.children(r)).map((c) => c.fields.title ?? ""), r);
    const [rn, zn] = [await nodeIn(page, r), await nodeIn(page, z)];
    return JSON.stringify(kids) === JSON.stringify(["x", "y"]) && rn?.fields.title === "revert root" && zn?.deleted === true;
  };
  assert.ok(await check(a), "alice's replica is back at the seq");
  await until("bob's replica is back at the seq", () => check(b));
  assert.deepEqual(await childIds(b, r), await childIds(a, r));

  // It was one undo step: undo puts the edits back.
  const undone = await a.evaluate(() => window.arbor.undo());
  assert.equal(undone.reverted, 5, JSON.stringify(undone)); // the 3 moves and 2 fields
  assert.equal((await nodeIn(a, z)).parent, r);
  assert.equal((await nodeIn(a, x)).parent, ROOT);

  // A seq outside the recorded history is the server's typed refusal.
  const err = await a.evaluate((r) => window.arbor.revertSubtree(r, 1e12).then(() => null, (e) => ({ name: e.name, code: e.code })), r);
  assert.deepEqual(err, { name: "ArborError", code: "bad_request" });
});

test("the demo: Ctrl+Z undoes a create with its typed title as one step, Ctrl+Shift+Z and Ctrl+Y redo it", async () => {
  await a.evaluate(() => window.outline.settled());
  const before = await titles(a);
  await a.click('[data-testid="add"]');
  await a.keyboard.type("typed in the demo");
  await until("the row has its title", async () => (await titles(a)).includes("typed in the demo"));
  // The row's id once the worker has answered the create (until then the
  // row is a placeholder, "tmp-...").
  const id = await until("the row has its node id", () =>
    a.evaluate(() => {
      const row = window.outline.rows().find((r) => r.title === "typed in the demo");
      return row && !row.id.startsWith("tmp-") ? row.id : null;
    }),
  );
  await until("bob has the row", async () => (await titles(b)).includes("typed in the demo"));

  // Still typing in the new row: Ctrl+Z takes the whole row away (create
  // and title are one step), in both browsers.
  await a.keyboard.press("Control+z");
  await until("the row is gone", async () => !(await titles(a)).includes("typed in the demo"));
  await a.evaluate(() => window.outline.settled());
  assert.deepEqual(await titles(a), before);
  assert.equal((await nodeIn(a, id)).deleted, true);
  await until("bob lost the row", async () => !(await titles(b)).includes("typed in the demo"));

  // Ctrl+Shift+Z brings it back with its title.
  await a.keyboard.press("Control+Shift+z");
  await until("the row is back with its title", async () => (await titles(a)).includes("typed in the demo"));
  assert.equal((await nodeIn(a, id)).fields.title, "typed in the demo");
  await until("bob has it back", async () => (await titles(b)).includes("typed in the demo"));

  // Ctrl+Z then Ctrl+Y: the same.
  await a.keyboard.press("Control+z");
  await until("gone again", async () => (await nodeIn(a, id))?.deleted === true);
  await a.keyboard.press("Control+y");
  await until("back again", async () => (await nodeIn(a, id))?.deleted === false && (await titles(a)).includes("typed in the demo"));

  // A delete through the demo is one step too: Ctrl+Z restores it.
  await a.evaluate((id) => window.outline.focus(id), id);
  await a.keyboard.press("Delete");
  await until("deleted", async () => (await nodeIn(a, id))?.deleted === true);
  await a.keyboard.press("Control+z");
  await until("restored by undo", async () => (await nodeIn(a, id))?.parent === ROOT && (await titles(a)).includes("typed in the demo"));
  await until("bob has it", async () => (await titles(b)).includes("typed in the demo"));
});

test("the demo: a multi-select drag moves every selected row, and one Ctrl+Z puts them all back", async () => {
  const [target, one, two] = await a.evaluate(async (root) => {
    const t = await window.arbor.create(root, "last", { title: "ms target" });
    const one = await window.arbor.create(root, "last", { title: "ms one" });
    const two = await window.arbor.create(root, "last", { title: "ms two" });
    return [t, one, two];
  }, ROOT);
  const row = (id) => a.locator(`[data-testid="row"][data-id="${id}"]`);
  await until("the rows are shown", async () => (await row(two).count()) === 1);
  await a.evaluate(() => window.outline.settled());
  await row(one).click({ modifiers: ["Control"], position: { x: 4, y: 14 } });
  await row(two).click({ modifiers: ["Control"], position: { x: 4, y: 14 } });
  assert.match((await row(one).getAttribute("class")) ?? "", /\bselected\b/);
  assert.match((await row(two).getAttribute("class")) ?? "", /\bselected\b/);
  assert.doesNotMatch((await row(target).getAttribute("class")) ?? "", /\bselected\b/);

  await row(one).dragTo(row(target), { targetPosition: { x: 200, y: 14 } });
  await until("both moved into the target", async () => JSON.stringify(await childIds(a, target)) === JSON.stringify([one, two]));
  await until("bob sees both moved", async () => JSON.stringify(await childIds(b, target)) === JSON.stringify([one, two]));

  await a.keyboard.press("Control+z");
  await until("one undo puts both back", async () => (await nodeIn(a, one))?.parent === ROOT && (await nodeIn(a, two))?.parent === ROOT);
  assert.deepEqual(await childIds(a, target), []);
  await until("bob sees both back", async () => (await nodeIn(b, one))?.parent === ROOT && (await nodeIn(b, two))?.parent === ROOT);
  const ids = await childIds(a, ROOT);
  assert.ok(ids.indexOf(target) < ids.indexOf(one) && ids.indexOf(one) < ids.indexOf(two), "back in their order");
});

test("the demo: the history panel lists the focused row's history, and Revert to here brings it back", async () => {
  const n = await a.evaluate(async (root) => {
    const n = await window.arbor.create(root, "last", { title: "h1" });
    await window.arbor.set(n, "title", "h2");
    await window.arbor.set(n, "title", "h3");
    return n;
  }, ROOT);
  await drained(a, "alice");
  await until("the row is shown", async () => (await a.locator(`[data-testid="row"][data-id="${n}"]`).count()) === 1);
  await a.evaluate((n) => window.outline.focus(n), n);
  await a.click('[data-testid="history-toggle"]');
  const entries = a.locator('[data-testid="history-entry"]');
  await until("the panel lists the row's 4 ops", async () => (await entries.count()) === 4);
  assert.equal(await a.locator('[data-testid="history"]').getAttribute("data-node"), n);
  const texts = await entries.allTextContents();
  assert.match(texts[0], /alice: set title to “h3”/);
  assert.match(texts[1], /alice: set title to “h2”/);
  const h1 = a.locator('[data-testid="history-entry"]', { hasText: "“h1”" });
  await h1.locator('[data-testid="history-revert"]').click();
  await until("alice's row is back at h1", async () => (await nodeIn(a, n))?.fields.title === "h1" && (await titles(a)).includes("h1"));
  await until("bob's too", async () => (await nodeIn(b, n))?.fields.title === "h1");
  // The panel follows: the revert's write is listed once it is on the server.
  await until("the panel lists the revert", async () => (await entries.count()) === 5);
  await a.click('[data-testid="history-close"]');
});
