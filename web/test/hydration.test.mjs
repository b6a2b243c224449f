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
      // The states the page had heard of when the page came.
      const early = arbor.children(ROOT, { limit: 50 }).then((rows) => ({ rows, statesThen: [...states] }));
      const made = arbor.create(ROOT, "first", { title: "made at once" });
      const first = await early;
      const id = await made;
      await live;
      return { first, id, states, after: await arbor.children(ROOT, { limit: 51 }), node: await arbor.node(id) };
    });
    assert.equal(seen.first.rows.length, 50);
    // Before the load was over (it ends in `connecting`, then `live`); 50
    // rows, so not from the empty replica either.
    assert.ok(
      !seen.first.statesThen.includes("connecting") && !seen.first.statesThen.includes("live"),
      `the page came during the cold start (states then: ${seen.first.statesThen}; all: ${seen.states})`,
    );
    assert.ok(seen.states.includes("cold_start"));
    // The server's page is the replica's, the early edit aside.
    const loaded = seen.after.filter((n) => n.id !== seen.id);
    assert.deepEqual(seen.first.rows, loaded.slice(0, 50));
    assert.equal(seen.first.rows[0].fields.title, "node 1");
    assert.equal(seen.first.rows[0].hasChildren, false);
    // The edit made at once was accepted and is there after the load (made
    // before the load took the replica, it was rebased on the snapshot;
    // made while it held it, it waited and was applied on top).
    assert.equal(seen.node.fields.title, "made at once");
    assert.equal(seen.node.parent, "00000000-0000-0000-0000-000000000000");
  } finally {
    await browser.close();
  }
});
