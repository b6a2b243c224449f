// The browser client and demo in real headless Chromium against a real
// `arbor-server dev` (its own Postgres): two browsers editing one
// thoughtspace, offline edits, reload from OPFS, and a 50k-node cold start.
//
//   node --test web/test/*.test.mjs   (after scripts/build-web.sh and
//                                   cargo build -p arbor-sync-server)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, openDemo, seedSpace, startServer, titles, until } from "./harness.mjs";

const ROOT = "00000000-0000-0000-0000-000000000000";
let server;
let alice;
let bob;

before(async () => {
  server = await startServer();
  alice = await launch();
  bob = await launch();
});

after(async () => {
  await alice?.close();
  await bob?.close();
  await server?.stop();
});

/** Adds a node at the end of ROOT through the UI (the add button, then typing). */
async function addThroughUi(page, title) {
  const before = (await titles(page)).length;
  await page.getByTestId("add").click();
  await until("the new row", async () => (await titles(page)).length > before);
  const input = page.locator(":focus");
  await input.fill(title);
  await input.press("Escape").catch(() => {});
  await page.evaluate(() => document.activeElement?.blur());
  await until(`"${title}" saved`, async () => (await titles(page)).includes(title));
}

test("two browsers edit one thoughtspace and see each other's edits", async () => {
  const a = await openDemo(alice.context, server, "demo", "alice");
  const b = await openDemo(bob.context, server, "demo", "bob");
  await until("alice live", () => a.evaluate(() => window.arbor.status().state === "live"));
  await until("bob live", () => b.evaluate(() => window.arbor.status().state === "live"));
  // Presence: each sees the other.
  await until("alice sees bob", async () => Number(await a.getByTestId("peers").getAttribute("data-count")) >= 2);
  await addThroughUi(a, "written by alice");
  await until("bob sees alice's node", async () => (await titles(b)).includes("written by alice"));
  const id = await b.evaluate(async (root) => window.arbor.create(root, "first", { title: "written by bob" }), ROOT);
  await until("alice sees bob's node", async () => (await titles(a)).includes("written by bob"));
  assert.equal((await titles(a))[0], "written by bob");
  // A nested edit: bob moves alice's node under his; alice sees it nested.
  await b.evaluate(async (parent) => {
    const kids = await window.arbor.children("00000000-0000-0000-0000-000000000000");
    const hers = kids.find((k) => k.fields.title === "written by alice");
    await window.arbor.move(hers.id, parent, "last");
  }, id);
  await until("alice sees the move", async () => {
    const info = await a.evaluate(async (parent) => {
      const kids = await window.arbor.children(parent);
      return kids.map((k) => k.fields.title);
    }, id);
    return info.includes("written by alice");
  });
  await a.close();
  await b.close();
});

test("one browser goes offline, both edit, it reconnects, both show the same tree", async () => {
  const a = await openDemo(alice.context, server, "demo", "alice");
  const b = await openDemo(bob.context, server, "demo", "bob");
  await until("alice live", () => a.evaluate(() => window.arbor.status().state === "live"));
  await a.getByTestId("offline-toggle").click();
  await until("alice offline", async () => (await a.getByTestId("status").getAttribute("data-state")) === "offline");
  await a.evaluate((root) => window.arbor.create(root, "last", { title: "alice offline edit" }), ROOT);
  await b.evaluate((root) => window.arbor.create(root, "last", { title: "bob online edit" }), ROOT);
  await until("alice's edit queued", () => a.evaluate(() => window.arbor.status().outbox > 0));
  await until("bob sees nothing of alice's offline edit", async () => !(await titles(b)).includes("alice offline edit"));
  await a.getByTestId("offline-toggle").click();
  await until("both show both edits", async () => {
    const [ta, tb] = [await titles(a), await titles(b)];
    return ta.includes("bob online edit") && tb.includes("alice offline edit");
  });
  await until("alice drained", () => a.evaluate(() => window.arbor.status().outbox === 0));
  await until("the same tree", async () => JSON.stringify(await titles(a)) === JSON.stringify(await titles(b)));
  await a.close();
  await b.close();
});

test("delete through the row's button, restore from the trash panel; the other browser follows", async () => {
  const a = await openDemo(alice.context, server, "demo", "alice");
  const b = await openDemo(bob.context, server, "demo", "bob");
  await until("alice live", () => a.evaluate(() => window.arbor.status().state === "live"));
  const id = await a.evaluate((root) => window.arbor.create(root, "last", { title: "to the trash and back" }), ROOT);
  await until("bob sees it", async () => (await titles(b)).includes("to the trash and back"));
  await a.evaluate((id) => window.outline.scrollTo(id), id);
  const row = a.locator(`[data-testid="row"][data-id="${id}"]`);
  await row.hover();
  await row.getByTestId("delete").click();
  await until("gone from alice's outline", async () => !(await titles(a)).includes("to the trash and back"));
  await until("gone from bob's outline", async () => !(await titles(b)).includes("to the trash and back"));
  await a.getByTestId("trash-toggle").click();
  const item = a.getByTestId("trash-item").filter({ hasText: "to the trash and back" });
  await until("the trash panel lists it", async () => (await item.count()) === 1);
  await item.getByTestId("restore").click();
  await until("back in alice's outline", async () => (await titles(a)).includes("to the trash and back"));
  await until("back in bob's outline", async () => (await titles(b)).includes("to the trash and back"));
  await until("the trash panel no longer lists it", async () => (await item.count()) === 0);
  await a.close();
  await b.close();
});

test("keyboard and mouse editing: rename, indent, outdent, drag to reorder and into another node", async () => {
  const a = await openDemo(alice.context, server, "demo", "alice");
  await until("alice live", () => a.evaluate(() => window.arbor.status().state === "live"));
  const [one, two, three] = await a.evaluate(async (root) => {
    const ids = [];
    for (const t of ["kbd one", "kbd two", "kbd three"]) ids.push(await window.arbor.create(root, "last", { title: t }));
    return ids;
  }, ROOT);
  const row = (id) => a.locator(`[data-testid="row"][data-id="${id}"]`);
  const node = (id) => a.evaluate((x) => window.arbor.node(x), id);
  const rootOrder = () =>
    a.evaluate(async (root) => (await window.arbor.children(root, { limit: 10000 })).map((k) => k.id), ROOT);
  await a.evaluate((id) => window.outline.scrollTo(id), two);
  await until("the rows", async () => (await row(three).count()) === 1);
  // Rename by typing; the title is saved.
  const title = row(two).getByTestId("title");
  await title.click();
  await title.fill("kbd two renamed");
  await title.press("Tab"); // and indent: under "kbd one"
  await until("renamed", async () => (await node(two))?.fields.title === "kbd two renamed");
  await until("indented under one", async () => (await node(two))?.parent === one);
  await row(two).getByTestId("title").press("Shift+Tab");
  await until("outdented to ROOT, right after one", async () => {
    const order = await rootOrder();
    return (await node(two))?.parent === ROOT && order.indexOf(two) === order.indexOf(one) + 1;
  });
  // Drag three onto the top edge of one: before it.
  await row(three).dragTo(row(one), { targetPosition: { x: 200, y: 2 } });
  await until("three before one", async () => {
    const order = await rootOrder();
    return order.indexOf(three) === order.indexOf(one) - 1;
  });
  // Drag one onto the middle of three: inside it.
  await row(one).dragTo(row(three), { targetPosition: { x: 200, y: 14 } });
  await until("one inside three", async () => (await node(one))?.parent === three);
  await a.close();
});

test("reload keeps the local replica (OPFS)", async () => {
  const a = await openDemo(alice.context, server, "demo", "alice");
  assert.equal(await a.evaluate(() => window.arbor.status().storage), "opfs");
  await a.getByTestId("offline-toggle").click();
  await until("alice offline", async () => (await a.getByTestId("status").getAttribute("data-state")) === "offline");
  // Made offline, so the server never saw it: after a reload only the
  // browser's own storage can have it.
  await a.evaluate((root) => window.arbor.create(root, "last", { title: "kept in OPFS" }), ROOT);
  await until("rendered", async () => (await titles(a)).includes("kept in OPFS"));
  await a.reload();
  await a.waitForFunction(() => window.outline !== undefined);
  await a.evaluate(() => window.outline.ready);
  await until("the offline node after reload", async () => (await titles(a)).includes("kept in OPFS"));
  assert.equal(await a.evaluate(() => window.arbor.status().storage), "opfs");
  await a.close();
});

test("a replica in memory says so: the storage warning shows, and it still syncs", async () => {
  const page = await bob.context.newPage();
  await page.goto(`${server.url}/demo/?space=demo&user=bob&memory=1`);
  await page.waitForFunction(() => window.outline !== undefined && window.arbor !== undefined, null, { timeout: 60_000 });
  await page.evaluate(() => window.outline.ready);
  assert.equal(await page.evaluate(() => window.arbor.status().storage), "memory");
  await until("the warning shows", () => page.getByTestId("storage-warning").isVisible());
  await until("live", () => page.evaluate(() => window.arbor.status().state === "live"));
  const a = await openDemo(alice.context, server, "demo", "alice");
  await a.evaluate((root) => window.arbor.create(root, "last", { title: "seen by a memory replica" }), ROOT);
  await until("the memory replica gets it", async () => (await titles(page)).includes("seen by a memory replica"));
  await a.close();
  await page.close();
});

test("a cold start of a 50k-node thoughtspace shows progress, then the tree", async () => {
  seedSpace(server, "big", 50_000);
  const page = await bob.context.newPage();
  // Progress is recorded from the first status on, so a fast load cannot
  // slip past the check.
  await page.addInitScript(() => {
    window.__progressSeen = false;
    const watch = setInterval(() => {
      const el = document.querySelector('[data-testid="progress"]');
      if (el && el.getClientRects().length > 0) {
        window.__progressSeen = true;
        clearInterval(watch);
      }
    }, 5);
  });
  await page.goto(`${server.url}/demo/?space=big&user=bob`);
  await page.waitForFunction(() => window.arbor !== undefined && window.outline !== undefined, null, { timeout: 60_000 });
  await page.waitForFunction(() => window.outline.rows().length === 50_000, null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => window.__progressSeen || window.__arborProgressSeen === true), true, "the progress bar was never shown");
  assert.equal(await page.evaluate(() => window.arbor.count()), 50_000);
  // Virtualized: a handful of row elements for 50k rows.
  const rendered = await page.getByTestId("row").count();
  assert.ok(rendered > 0 && rendered < 200, `${rendered} row elements in the DOM`);
  const first = await page.getByTestId("row").first().textContent();
  assert.ok(first !== null);
  await page.close();
});

test("tabs of one browser share one replica, and ownership moves when the owner's tab closes", async () => {
  const first = await openDemo(alice.context, server, "demo", "alice");
  await until("first tab owns", () => first.evaluate(() => window.arbor.status().role === "owner"));
  const second = await openDemo(alice.context, server, "demo", "alice");
  assert.equal(await second.evaluate(() => window.arbor.status().role), "follower");
  // A write in the follower lands in the owner's database and shows in both.
  const id = await second.evaluate((root) => window.arbor.create(root, "last", { title: "from the second tab" }), ROOT);
  await until("the owner tab shows it", async () => (await titles(first)).includes("from the second tab"));
  assert.equal(await first.evaluate((id) => window.arbor.node(id).then((n) => n?.fields.title), id), "from the second tab");
  await first.close();
  await until("the second tab takes over", () => second.evaluate(() => window.arbor.status().role === "owner"), 60_000);
  await second.evaluate((id) => window.arbor.set(id, "title", "after the handover"), id);
  const b = await openDemo(bob.context, server, "demo", "bob");
  await until("another browser sees the edit made after the handover", async () => (await titles(b)).includes("after the handover"));
  await second.close();
  await b.close();
});

test("a call whose owner dies between its edit and its reply is answered by the next owner, not made again", async () => {
  const first = await openDemo(alice.context, server, "handover", "alice");
  await until("first tab owns", () => first.evaluate(() => window.arbor.status().role === "owner"));
  const second = await openDemo(alice.context, server, "handover", "alice");
  assert.equal(await second.evaluate(() => window.arbor.status().role), "follower");
  // The owner runs what the follower forwards but never replies, as if its
  // tab died right after the edit.
  await first.evaluate(() => window.arbor._holdReplies());
  await second.evaluate((root) => {
    window.pendingCreate = window.arbor.create(root, "last", { title: "made once" });
    window.pendingSet = window.pendingCreate.then((id) => window.arbor.set(id, "note", "set once"));
  }, ROOT);
  await until("the owner made it", async () => (await titles(first)).includes("made once"));
  await first.close();
  // The follower takes over, resends the open call, and finds it done.
  const id = await second.evaluate(() => window.pendingCreate);
  await second.evaluate(() => window.pendingSet);
  assert.equal(await second.evaluate(() => window.arbor.status().role), "owner");
  const made = await second.evaluate(async (root) => {
    const kids = await window.arbor.children(root);
    return kids.filter((k) => k.fields.title === "made once").map((k) => k.id);
  }, ROOT);
  assert.deepEqual(made, [id], "one node, the one the call answered with");
  assert.equal(await second.evaluate((id) => window.arbor.node(id).then((n) => n?.fields.note), id), "set once");
  await second.close();
});
