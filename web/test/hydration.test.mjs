// Progressive hydration in Chromium (docs/BROWSER.md): while a new
// replica's first cold start runs, the first page of a list comes from the
// server (the same rows the replica shows once loaded), and an edit made
// at once is accepted, not refused `busy`, and applied when the load lands.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launch, seedSpace, startServer } from "./harness.mjs";

const NODES = 100_000;

let server;
before(async () => {
  server = await startServer();
  seedSpace(server, "hydra", NODES);
});
after(async () => {
  await server?.stop();
});

test("the first page shows during the cold start, and an edit made at once lands", { timeout: 240_000 }, async () => {
  const browser = await launch();
  try {
    const page = await browser.context.newPage();
    await page.goto(`${server.url}/demo/style.css`);
    const seen = await page.evaluate(async () => {
      const ROOT = "00000000-0000-0000-0000-000000000000";
      const { Arbor } = await import("/demo/arbor.js");
      const token = (await (await fetch("/dev/token?space=hydra&user=h")).json()).token;
      const arbor = await Arbor.open({ space: "hydra", workerUrl: "/demo/arbor-worker.js" });
      const states = [];
      arbor.onStatus((s) => states.push(s.state));
      const live = new Promise((ok) => arbor.onStatus((s) => s.state === "live" && ok()));
      // Rows, not the image: the cold start lasts a while.
      await arbor.connect({ server: location.origin, token, images: false });
      const early = arbor.children(ROOT, { limit: 50 }).then((rows) => ({ rows, stateThen: arbor.status().state }));
      const made = arbor.create(ROOT, "first", { title: "made at once" });
      const first = await early;
      const id = await made;
      await live;
      return { first, id, states, after: await arbor.children(ROOT, { limit: 51 }), node: await arbor.node(id) };
    });
    assert.equal(seen.first.rows.length, 50);
    assert.equal(seen.first.stateThen, "cold_start", `the page came during the cold start (states: ${seen.states})`);
    // The server's page is the replica's, the early edit aside.
    const loaded = seen.after.filter((n) => n.id !== seen.id);
    assert.deepEqual(seen.first.rows, loaded.slice(0, 50));
    assert.equal(seen.first.rows[0].fields.title, "node 1");
    assert.equal(seen.first.rows[0].hasChildren, false);
    // The edit made at once was accepted and applied on top of the load.
    assert.equal(seen.node.fields.title, "made at once");
    assert.equal(seen.after[0].id, seen.id);
  } finally {
    await browser.close();
  }
});
