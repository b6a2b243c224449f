// A subtree outline (`/demo/?root=<id>`, a subtree replica) in real
// headless Chromium against a real `arbor-server dev`: it shows exactly the
// root's subtree while a full outline in another browser edits around it,
// and it lives next to the full replica in one browser.
//
//   node --test web/test/*.test.mjs   (after scripts/build-web.sh and
//                                   cargo build -p arbor-sync-server)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, openDemo, startServer, titles, until } from "./harness.mjs";

const ROOT = "00000000-0000-0000-0000-000000000000";
const SPACE = "demo"; // the one thoughtspace `arbor-server dev` creates
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

/** The visible rows as "title@depth", in order. */
async function rows(page) {
  return page.evaluate(() => window.outline.rows().map((r) => `${r.title}@${r.depth}`));
}

/** Whether the page's replica holds `id` at all. */
async function holds(page, id) {
  return (await page.evaluate((x) => window.arbor.node(x), id)) !== null;
}

const live = (page) => page.evaluate(() => window.arbor.status().state === "live");
const drained = (page) => page.evaluate(() => window.arbor.status().outbox === 0);

test("a subtree outline shows exactly its root's subtree as a full outline edits around it", async () => {
  const full = await openDemo(alice.context, server, SPACE, "alice");
  await until("the full outline live", () => live(full));
  // R with two children, and a node outside R that has a child.
  const { r, one, outside, outsideChild } = await full.evaluate(async (root) => {
    const a = window.arbor;
    const r = await a.create(root, "last", { title: "R" });
    const one = await a.create(r, "last", { title: "r one" });
    await a.create(r, "last", { title: "r two" });
    const outside = await a.create(root, "last", { title: "outside" });
    const outsideChild = await a.create(outside, "last", { title: "outside child" });
    return { r, one, outside, outsideChild };
  }, ROOT);
  await until("the full outline pushed", () => drained(full));

  const sub = await openDemo(bob.context, server, SPACE, "bob", { root: r });
  assert.equal(await sub.evaluate(() => window.outline.top), r);
  await until("the subtree outline live", () => live(sub));
  const status = await sub.evaluate(() => window.arbor.status());
  assert.equal(status.root, r);
  assert.equal(status.rootInTrash, false);
  assert.equal(status.storage, "opfs");
  // Exactly R's children are the top-level rows; nothing of outside R is
  // even in the replica (R itself and its two children: 3 nodes).
  await until("R's children as the top rows", async () => JSON.stringify(await rows(sub)) === JSON.stringify(["r one@0", "r two@0"]));
  assert.equal(await holds(sub, outside), false);
  assert.equal(await sub.evaluate(() => window.arbor.count()), 3);
  assert.equal(await sub.getByTestId("root").textContent(), "R");

  // A node created under R in the full outline appears.
  await full.evaluate((parent) => window.arbor.create(parent, "last", { title: "r three" }), r);
  await until("the new child of R", async () => JSON.stringify(await rows(sub)) === JSON.stringify(["r one@0", "r two@0", "r three@0"]));

  // A child of R moved out of R disappears (from the replica too).
  await full.evaluate((id) => window.arbor.move(id, "00000000-0000-0000-0000-000000000000", "last"), one);
  await until("r one gone", async () => JSON.stringify(await rows(sub)) === JSON.stringify(["r two@0", "r three@0"]));
  await until("r one left the replica", async () => !(await holds(sub, one)));

  // The outside node, which has a child, moved into R arrives with it.
  await full.evaluate(([id, parent]) => window.arbor.move(id, parent, "last"), [outside, r]);
  await until("outside in R", async () => JSON.stringify(await rows(sub)) === JSON.stringify(["r two@0", "r three@0", "outside@0"]));
  const child = await until("its child with it", () => sub.evaluate((id) => window.arbor.node(id), outsideChild));
  assert.equal(child.parent, outside);
  assert.equal(child.fields.title, "outside child");
  await sub.evaluate((id) => window.outline.expand(id), outside);
  await until("its child under it", async () =>
    JSON.stringify(await rows(sub)) === JSON.stringify(["r two@0", "r three@0", "outside@0", "outside child@1"]),
  );

  // The Add button appends under R; the full outline sees it there.
  await sub.getByTestId("add").click();
  await until("the new row", async () => (await rows(sub)).length === 5);
  await sub.locator(":focus").fill("added in the subtree");
  await sub.evaluate(() => window.outline.settled());
  const added = await until("created, last in the outline", () =>
    sub.evaluate(() => {
      const last = window.outline.rows().at(-1);
      return last?.title === "added in the subtree" && !last.id.startsWith("tmp-") ? last.id : null;
    }),
  );
  await until("added under R", async () => {
    const n = await sub.evaluate((id) => window.arbor.node(id), added);
    return n?.parent === r && n.fields.title === "added in the subtree";
  });
  const input = sub.locator(`[data-testid="row"][data-id="${added}"] [data-testid="title"]`);
  const rowsBefore = await rows(sub);
  assert.equal(rowsBefore.at(-1), "added in the subtree@0");
  // Outdent stops at the root: a top-level row stays where it is.
  await input.press("Shift+Tab");
  await sub.evaluate(() => window.outline.settled());
  assert.equal((await sub.evaluate((id) => window.arbor.node(id), added)).parent, r);
  assert.deepEqual(await rows(sub), rowsBefore);
  await until("the full outline has it under R", async () => {
    const n = await full.evaluate((id) => window.arbor.node(id), added);
    return n?.parent === r && n.fields.title === "added in the subtree";
  });
  // A drop below the last row goes to the end of R: drag "r two" there.
  const two = rowsBefore.indexOf("r two@0");
  assert.equal(two, 0);
  const twoId = await sub.evaluate(() => window.outline.rows()[0].id);
  const box = await sub.getByTestId("scroller").boundingBox();
  await sub.locator(`[data-testid="row"][data-id="${twoId}"]`).dragTo(sub.getByTestId("scroller"), {
    targetPosition: { x: 200, y: box.height - 10 },
  });
  await until("r two last in R", async () => {
    const kids = await sub.evaluate(async (parent) => (await window.arbor.children(parent)).map((k) => k.fields.title), r);
    return kids.at(-1) === "r two";
  });
  await until("the full outline sees r two last in R", async () => {
    const kids = await full.evaluate(async (parent) => (await window.arbor.children(parent)).map((k) => k.fields.title), r);
    return kids.at(-1) === "r two";
  });
  await until("the subtree outline drained", () => drained(sub));

  // R deleted in the full outline: the subtree outline keeps its rows and
  // says so; restored, the warning goes.
  const shown = await rows(sub);
  await full.evaluate((id) => window.arbor.delete(id), r);
  await until("the root-deleted warning", () => sub.getByTestId("root-trash-warning").isVisible());
  assert.equal(await sub.evaluate(() => window.arbor.status().rootInTrash), true);
  assert.deepEqual(await rows(sub), shown);
  await full.evaluate((id) => window.arbor.restore(id), r);
  await until("the warning gone", async () => !(await sub.getByTestId("root-trash-warning").isVisible()));

  await sub.close();
  await full.close();
});

test("a subtree outline and the full outline of one space run side by side in one browser", async () => {
  const full = await openDemo(alice.context, server, SPACE, "alice");
  await until("the full outline live", () => live(full));
  const r = await full.evaluate(async (root) => {
    const r = await window.arbor.create(root, "last", { title: "side by side" });
    await window.arbor.create(r, "last", { title: "inside side by side" });
    return r;
  }, ROOT);
  await until("pushed", () => drained(full));
  // Its own replica, so its own owner: both tabs own theirs.
  const sub = await openDemo(alice.context, server, SPACE, "alice", { root: r });
  await until("the subtree outline live", () => live(sub));
  assert.equal(await sub.evaluate(() => window.arbor.status().role), "owner");
  assert.equal(await full.evaluate(() => window.arbor.status().role), "owner");
  assert.equal(await sub.evaluate(() => window.arbor.status().storage), "opfs");
  await until("R's child", async () => JSON.stringify(await titles(sub)) === JSON.stringify(["inside side by side"]));
  // An edit in the subtree tab reaches the full tab through the server.
  await sub.evaluate((parent) => window.arbor.create(parent, "first", { title: "from the subtree tab" }), r);
  await full.evaluate((id) => window.outline.expand(id), r);
  await until("the full tab shows it under R", async () => {
    const kids = await full.evaluate(async (parent) => (await window.arbor.children(parent)).map((k) => k.fields.title), r);
    return kids[0] === "from the subtree tab";
  });
  // A second subtree tab shares the first one's replica.
  const sub2 = await openDemo(alice.context, server, SPACE, "alice", { root: r });
  assert.equal(await sub2.evaluate(() => window.arbor.status().role), "follower");
  await until("the follower shows the subtree", async () =>
    JSON.stringify(await titles(sub2)) === JSON.stringify(["from the subtree tab", "inside side by side"]),
  );
  await sub2.close();
  await sub.close();
  await full.close();
});
