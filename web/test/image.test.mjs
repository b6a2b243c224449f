// Cold start from a replica image in Chromium (docs/PROTOCOL.md, "Replica
// images"): a fresh browser's replica takes the server's image of the space
// (imported into its OPFS pool and copied in), catches up what came after
// it, and then edits and syncs as any replica does.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { launch, openDemo, startServer, until } from "./harness.mjs";

const ROOT = "00000000-0000-0000-0000-000000000000";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** A counter from the server's metrics (0 before any): the sum of its
 * series whose labels include `label`. */
async function counter(name, label = "") {
  const text = await (await fetch(server.metrics)).text();
  return text
    .split("\n")
    .filter((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && l.includes(label))
    .reduce((sum, l) => sum + Number(l.split(/\s+/).at(-1)), 0);
}

/** The status of `GET /v1/spaces/demo/image` (the client's schema is
 * whatever the server has: no `schema` parameter). */
async function imageStatus() {
  const r = await fetch(`${server.url}/v1/spaces/demo/image`, { headers: { authorization: `Bearer ${server.token}` } });
  await r.arrayBuffer();
  return r.status;
}

/** Every node under ROOT, in order, with its title. */
function rootRows(page) {
  return page.evaluate(async (root) => {
    const rows = [];
    let after;
    for (;;) {
      const page = await window.arbor.children(root, { after, limit: 500 });
      rows.push(...page.map((n) => [n.id, n.fields.title ?? null]));
      if (page.length < 500) return rows;
      after = page[page.length - 1].id;
    }
  }, ROOT);
}

test("a fresh browser cold-starts from the replica image and catches up after it", { timeout: 240_000 }, async () => {
  const alice = await launch();
  const bob = await launch();
  try {
    const a = await openDemo(alice.context, server, "demo", "alice");
    await until("alice live", () => a.evaluate(() => window.arbor.status().state === "live"));
    const ids = await a.evaluate(async (root) => {
      const ids = [];
      for (let i = 0; i < 300; i++) ids.push(await window.arbor.create(root, "last", { title: `node ${i}` }));
      return ids;
    }, ROOT);
    await until("alice pushed", () => a.evaluate(() => window.arbor.status().outbox === 0));

    // Alice's own cold start found none and started a build behind its
    // 404 (an image at any seq catch-up covers is served).
    await until("the image is built", async () => (await imageStatus()) === 200, 60_000);
    // After the image: catch-up brings these.
    await a.evaluate(async (ids) => {
      await window.arbor.set(ids[0], "title", "after the image");
      await window.arbor.move(ids[1], ids[2], "last");
    }, ids);
    await until("alice pushed again", () => a.evaluate(() => window.arbor.status().outbox === 0));

    const sent = () => counter("arbor_images_sent_total");
    const rows = () => counter("arbor_snapshots_total", 'scope="space"');
    const [sentBefore, rowsBefore] = [await sent(), await rows()];
    // (Alice's cold start loaded rows: there was no image yet.)
    assert.ok(rowsBefore >= 1, "the row snapshots are counted");
    // The worker says in the console when it falls back to rows.
    const warnings = [];
    bob.context.on("console", (m) => warnings.push(m.text()));
    const b = await openDemo(bob.context, server, "demo", "bob");
    await until("bob live", () => b.evaluate(() => window.arbor.status().state === "live"), 60_000);
    assert.equal(await sent(), sentBefore + 1, "the image was sent to bob");
    assert.equal(await rows(), rowsBefore, "bob loaded no row snapshot");
    assert.deepEqual(warnings.filter((w) => w.includes("no replica image")), []);
    await until("bob caught up", async () => JSON.stringify(await rootRows(b)) === JSON.stringify(await rootRows(a)));
    const moved = await b.evaluate((id) => window.arbor.node(id), ids[1]);
    assert.equal(moved.parent, ids[2]);
    assert.equal((await b.evaluate((id) => window.arbor.node(id), ids[0])).fields.title, "after the image");
    assert.equal((await b.evaluate(() => window.arbor.status())).storage, "opfs");

    // Bob's replica is his own: his edit reaches alice.
    const made = await b.evaluate((root) => window.arbor.create(root, "first", { title: "from bob" }), ROOT);
    await until("alice sees bob's edit", () => a.evaluate((id) => window.arbor.node(id).then((n) => n?.fields.title === "from bob"), made));
  } finally {
    await alice.close();
    await bob.close();
  }
});

test("a corrupt image is refused: the browser loads rows, and its replica is whole", { timeout: 240_000 }, async () => {
  // A flipped byte in the middle of every cached image (the server sends
  // it as it is: its CRC-32 no longer matches).
  const images = join(server.dir, "images");
  const files = readdirSync(images).filter((f) => f.endsWith(".image.zst"));
  assert.ok(files.length > 0, "an image is cached (the test above built it)");
  for (const f of files) {
    const bytes = readFileSync(join(images, f));
    bytes[bytes.length >> 1] ^= 0x5a;
    writeFileSync(join(images, f), bytes);
  }
  const carol = await launch();
  try {
    const rowsBefore = await counter("arbor_snapshots_total", 'scope="space"');
    const sentBefore = await counter("arbor_images_sent_total");
    const c = await openDemo(carol.context, server, "demo", "carol");
    await until("carol live", () => c.evaluate(() => window.arbor.status().state === "live"), 60_000);
    assert.equal(await counter("arbor_images_sent_total"), sentBefore + 1, "the image was sent");
    assert.equal(await counter("arbor_snapshots_total", 'scope="space"'), rowsBefore + 1, "then rows were loaded");
    // Her replica is whole and hers: it edits, syncs, and opens again.
    const made = await c.evaluate((root) => window.arbor.create(root, "first", { title: "from carol" }), ROOT);
    await until("carol pushed", () => c.evaluate(() => window.arbor.status().outbox === 0));
    await c.reload();
    await c.waitForFunction(() => window.arbor !== undefined, null, { timeout: 60_000 });
    await until("carol's node is back", () => c.evaluate((id) => window.arbor.node(id).then((n) => n?.fields.title === "from carol"), made));
  } finally {
    await carol.close();
  }
});
