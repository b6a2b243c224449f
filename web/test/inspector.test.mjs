// The inspector in real headless Chromium against a real `arbor-server
// dev`: the replica's reads (`Arbor.outbox`, `recentOps`, `restores`,
// `place`, `size`) and the demo's panel over them, with alice and bob in
// two browsers (carol's browser, a third, for a refused edit).
//
// - Offline edits are in the outbox (API and panel) and leave it once
//   synced; they then show among the recent ops, by alice; sizes grow.
// - A remote op shows with its author; the node lookup names the move
//   that put a node where it is (who, which seq, from where) and lists
//   the node's moves, for a typed id and for the focused row.
// - A delete concurrent with an edit inside: the server's restore shows
//   among the restores, and the lookup says the restore rule put it back.
// - An edit the server refuses for good shows among the rejected ops.
// - A burst of edits refreshes the open panel a few times, not per op,
//   and a follower tab's reads are answered by the owner.
// - The package's React `Inspector` (web/react/inspector.ts), bundled
//   from source into a page of its own origin: the outbox, recent ops
//   with their authors, the lookup, and a few renders for a burst.
//
//   node --test --test-concurrency=1 web/test/inspector.test.mjs
//   (after scripts/build-web.sh and cargo build -p arbor-sync-server;
//   the React page takes react and react-dom from
//   web/examples/react-outline/node_modules, else installs them with npm)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, createReadStream, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { build } from "esbuild";
import { aliceAndBob, drained, launch, openDemo, repo, setOffline, startServer, until } from "./harness.mjs";

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
  await openInspector(a);
});

after(async () => {
  await alice?.close();
  await bob?.close();
  await server?.stop();
});

async function openInspector(page) {
  await page.getByTestId("inspector-toggle").click();
  await until("the inspector shows", async () => (await page.getByTestId("inspector").isVisible()) && Number(await page.getByTestId("inspector").getAttribute("data-refreshes")) > 0);
}



/** The `data-*` attributes of every element with `testid` inside the panel. */
function listed(page, testid) {
  return page.evaluate((testid) => [...document.querySelectorAll(`[data-testid="inspector"] [data-testid="${testid}"]`)].map((el) => ({ ...el.dataset })), testid);
}

/** The looked-up node's "why it is here" line, as its data attributes. */
async function lastMoveShown(page) {
  const el = page.getByTestId("inspector-last-move");
  return (await el.count()) === 0 ? null : el.evaluate((e) => ({ ...e.dataset, text: e.textContent }));
}

test("offline edits are in the outbox until synced, then among the recent ops; sizes grow", async () => {
  const size0 = await a.evaluate(() => window.arbor.size());
  assert.ok(size0.databaseBytes > 0);
  assert.equal(size0.outbox, 0);

  await setOffline(a, true);
  const x = await a.evaluate(async (root) => {
    const x = await window.arbor.create(root, "last", { title: "made offline" });
    await window.arbor.set(x, "note", "queued");
    return x;
  }, ROOT);
  // The API: the create, its title and the note, oldest first, in effect.
  const outbox = await a.evaluate(() => window.arbor.outbox());
  assert.deepEqual(
    outbox.map((e) => [e.op.kind, e.op.node, e.applied]),
    [
      ["move", x, true],
      ["set", x, true],
      ["set", x, true],
    ],
  );
  assert.equal(outbox[0].op.parent, ROOT);
  assert.equal(outbox[0].from, null, "a create comes from nowhere");
  assert.deepEqual((await a.evaluate(() => window.arbor.outbox(1))).length, 1);
  // The panel: the same three, and the status counts them.
  await until("the panel lists the pending ops", async () => {
    const ops = await listed(a, "inspector-outbox-op");
    return ops.length === 3 && ops.every((o) => o.node === x && o.applied === "true") && (await a.getByTestId("inspector-status").getAttribute("data-outbox")) === "3";
  });
  assert.match(await a.getByTestId("inspector-outbox").textContent(), /created “made offline” under ROOT/);
  // Nothing of it is committed: not among the recent ops.
  assert.ok(!(await listed(a, "inspector-recent-op")).some((o) => o.node === x));

  await setOffline(a, false);
  await drained(a, "alice");
  assert.deepEqual(await a.evaluate(() => window.arbor.outbox()), []);
  await until("the panel's outbox emptied and the ops are recent, by alice", async () => {
    const pending = await listed(a, "inspector-outbox-op");
    const recent = (await listed(a, "inspector-recent-op")).filter((o) => o.node === x);
    return pending.length === 0 && recent.length === 3 && recent.every((o) => o.author === "alice" && o.origin === "new");
  });
  // The API's recent ops: newest first, the three at the top.
  const recent = await a.evaluate(() => window.arbor.recentOps({ limit: 3 }));
  assert.deepEqual(
    recent.entries.map((e) => [e.op.node, e.author, e.origin]),
    [
      [x, "alice", "new"],
      [x, "alice", "new"],
      [x, "alice", "new"],
    ],
  );
  assert.ok(recent.entries[0].seq > recent.entries[1].seq);
  assert.equal(recent.headSeq, await a.evaluate(() => window.arbor.status().cursor));
  // In pages: two, then from the second one's seq on.
  const first = await a.evaluate(() => window.arbor.recentOps({ limit: 2 }));
  assert.equal(first.nextBefore, recent.entries[1].seq);
  const older = await a.evaluate((before) => window.arbor.recentOps({ before, limit: 1000 }), first.nextBefore);
  assert.deepEqual(older.entries[0], recent.entries[2]);
  assert.equal(older.nextBefore, null);
  assert.equal(older.entries.length, size0.history.rows + 1);

  const size1 = await a.evaluate(() => window.arbor.size());
  assert.equal(size1.nodes.rows, size0.nodes.rows + 1);
  assert.equal(size1.fields.rows, size0.fields.rows + 2);
  assert.equal(size1.history.rows, size0.history.rows + 3);
  assert.ok(size1.nodes.exact);
  assert.equal(size1.cursor, recent.headSeq);
  await until("the panel's sizes grew", async () => Number(await a.getByTestId("inspector-size").getAttribute("data-nodes")) === size1.nodes.rows);
});

test("a remote op shows with its author; the lookup says why a node is where it is", async () => {
  const p = await a.evaluate((root) => window.arbor.create(root, "last", { title: "alice's parent" }), ROOT);
  await drained(a, "alice");
  await until("bob has alice's node", () => b.evaluate(async (p) => (await window.arbor.node(p)) !== null, p));
  const y = await b.evaluate(async (p) => {
    const y = await window.arbor.create(p, "last", { title: "bob's child" });
    await window.arbor.move(y, "00000000-0000-0000-0000-000000000000", "first");
    await window.arbor.move(y, p, "first");
    return y;
  }, p);
  await drained(b, "bob");
  await until("alice's panel lists bob's ops, by bob", async () => (await listed(a, "inspector-recent-op")).filter((o) => o.node === y && o.author === "bob").length === 4);

  // The API: y's place and the move that put it there.
  const place = await a.evaluate((y) => window.arbor.place(y), y);
  assert.equal(place.parent, p);
  assert.deepEqual(place.ancestors, [p, ROOT]);
  assert.equal(place.deleted, false);
  const history = await a.evaluate((y) => window.arbor.history(y, { local: true }), y);
  const lastMove = history.entries.find((e) => e.op.kind === "move");
  assert.equal(place.lastMove.author, "bob");
  assert.equal(place.lastMove.origin, "new");
  assert.equal(place.lastMove.pending, false);
  assert.equal(place.lastMove.seq, lastMove.seq);
  assert.equal(place.lastMove.stamp, lastMove.op.stamp);
  assert.deepEqual(place.lastMove.from?.parent, ROOT, "the move before it put y under ROOT");
  assert.equal(await a.evaluate(() => window.arbor.place("00000000-0000-0000-0000-00000000abcd")), null);

  // The panel, for a typed id: the same, and y's three moves and title.
  await a.getByTestId("inspector-node-input").fill(y);
  await until("the lookup shows y", async () => (await lastMoveShown(a))?.seq === String(lastMove.seq));
  const why = await lastMoveShown(a);
  assert.equal(why.author, "bob");
  assert.equal(why.parent, p);
  assert.equal(why.pending, "false");
  assert.match(why.text, /Put under “alice's parent” from under ROOT by bob's move, at seq/);
  const ops = await listed(a, "inspector-node-op");
  assert.deepEqual(
    ops.map((o) => o.author),
    ["bob", "bob", "bob", "bob"],
  );
  assert.equal(ops.filter((o) => o.applied === "true").length, 3, "three moves, each in effect");
  assert.match(await a.getByTestId("inspector-node-path").textContent(), /“alice's parent” › “bob's child”/);

  // Following the focused row: alice's own node, a move of hers pending
  // while offline.
  await a.getByTestId("inspector-node-focused").click();
  await a.evaluate((p) => window.outline.focus(p), p);
  await until("the lookup follows the focused row", async () => (await a.getByTestId("inspector-node").getAttribute("data-node")) === p);
  await setOffline(a, true);
  await a.evaluate((p) => window.arbor.move(p, "00000000-0000-0000-0000-000000000000", "first"), p);
  await until("the lookup shows the pending move", async () => (await lastMoveShown(a))?.pending === "true");
  assert.match((await lastMoveShown(a)).text, /this replica's own move, not yet on the server/);
  await setOffline(a, false);
  await drained(a, "alice");
  await until("the move is alice's, committed", async () => {
    const w = await lastMoveShown(a);
    return w?.pending === "false" && w.author === "alice" && w.seq !== "";
  });
});

test("a delete concurrent with an edit inside: the server's restore shows", async () => {
  const [s, c] = await a.evaluate(async (root) => {
    const s = await window.arbor.create(root, "last", { title: "section" });
    const c = await window.arbor.create(s, "last", { title: "inside" });
    return [s, c];
  }, ROOT);
  await drained(a, "alice");
  await until("bob has the section", () => b.evaluate(async (c) => (await window.arbor.node(c)) !== null, c));
  // Bob edits inside without knowing of the delete.
  await setOffline(b, true);
  await b.evaluate((c) => window.arbor.set(c, "title", "edited inside"), c);
  await a.evaluate((s) => window.arbor.delete(s), s);
  await drained(a, "alice");
  await setOffline(b, false);
  await drained(b, "bob");
  await until("the restore rule brought the section back for alice", () => a.evaluate(async (s) => (await window.arbor.node(s))?.deleted === false, s));

  const restores = await a.evaluate(() => window.arbor.restores());
  const restore = restores.entries.find((e) => e.op.node === s);
  assert.ok(restore, JSON.stringify(restores));
  assert.equal(restore.origin, "restore");
  assert.equal(restore.author, null);
  assert.equal(restore.op.parent, ROOT);
  assert.ok(restores.entries.every((e) => e.origin === "restore"));
  await until("the panel lists the restore", async () => (await listed(a, "inspector-restore")).some((o) => o.node === s && o.seq === String(restore.seq)));
  await a.getByTestId("inspector-node-input").fill(s);
  await until("the lookup names the restore rule", async () => (await lastMoveShown(a))?.origin === "restore");
  const why = await lastMoveShown(a);
  assert.equal(why.seq, String(restore.seq));
  assert.match(why.text, /from under TRASH by the server's restore rule/);
  const place = await a.evaluate((s) => window.arbor.place(s), s);
  assert.equal(place.lastMove.from.parent, TRASH);
  await a.getByTestId("inspector-node-focused").click();
});

test("a burst of edits refreshes the panel a few times, not once per op; a follower's reads", async () => {
  const refreshes = async () => Number(await a.getByTestId("inspector").getAttribute("data-refreshes"));
  const before = await refreshes();
  const started = Date.now();
  const N = 150;
  const last = await a.evaluate(async ([root, n]) => {
    let id = null;
    for (let i = 0; i < n; i++) id = await window.arbor.create(root, "last", { title: `burst ${i}` });
    return id;
  }, [ROOT, N]);
  await drained(a, "alice");
  await until("the panel shows the burst's last op", async () => (await listed(a, "inspector-recent-op"))[0]?.node === last);
  const made = (await refreshes()) - before;
  const elapsed = Date.now() - started;
  // Two ops each (a create and its title): 2N change events and more
  // status events, and a refresh at most every 500 ms.
  assert.ok(made >= 1 && made <= Math.ceil(elapsed / 500) + 2, `${made} refreshes for ${2 * N} ops in ${elapsed} ms`);

  // A follower tab of alice's browser: its reads run in the owner tab.
  const f = await openDemo(alice.context, server, SPACE, "alice");
  try {
    assert.equal(await f.evaluate(() => window.arbor.status().role), "follower");
    const [mine, theirs] = await Promise.all([a.evaluate(() => window.arbor.size()), f.evaluate(() => window.arbor.size())]);
    assert.equal(theirs.nodes.rows, mine.nodes.rows);
    assert.equal(theirs.cursor, mine.cursor);
    const page = await f.evaluate(() => window.arbor.recentOps({ limit: 2 }));
    assert.equal(page.entries[0].op.node, last);
    assert.deepEqual(await f.evaluate(() => window.arbor.outbox()), []);
    await openInspector(f);
    await until("the follower's panel says follower", async () => /follower/.test(await f.getByTestId("inspector-status").textContent()));
  } finally {
    await f.close();
  }
});

test("an edit the server refuses for good shows among the rejected ops", async () => {
  // Carol's browser holds a replica whose id carol owns on the server once
  // she has pushed with it. Opened there by mallory, its next push is
  // refused for good (wrong_replica).
  const carol = await launch();
  try {
    const c = await openDemo(carol.context, server, SPACE, "carol");
    await until("carol live", () => c.evaluate(() => window.arbor.status().state === "live"));
    await c.evaluate((root) => window.arbor.create(root, "last", { title: "carol owns this replica" }), ROOT);
    await drained(c, "carol");
    await c.close();
    const m = await openDemo(carol.context, server, SPACE, "mallory");
    await openInspector(m);
    const z = await m.evaluate((root) => window.arbor.create(root, "last", { title: "mallory's edit" }), ROOT);
    await until("the refused edit listed in the panel", async () => {
      const ops = await listed(m, "inspector-rejected-op");
      return ops.length > 0 && ops.every((o) => o.code === "wrong_replica") && ops.some((o) => o.node === z) && (await m.getByTestId("inspector-status").getAttribute("data-outbox")) === "0";
    });
    assert.match(await m.getByTestId("inspector-rejected").textContent(), /wrong_replica/);
    // The refusal makes the replica reload a snapshot (calls meanwhile
    // fail `busy`); then the panel, the status and `size` agree.
    await until("the panel, the status and size agree on the rejected count", async () => {
      const status = await m.evaluate(() => window.arbor.status());
      const size = await m.evaluate(() => window.arbor.size().catch(() => null));
      const shown = Number(await m.getByTestId("inspector-status").getAttribute("data-rejected"));
      return status.state === "live" && status.rejected > 0 && size?.rejected === status.rejected && shown === status.rejected && (await listed(m, "inspector-rejected-op")).length === status.rejected;
    });
    // Cleared from the panel: the list empties.
    await m.getByTestId("inspector-rejected-clear").click();
    await until("the rejected list emptied", async () => (await listed(m, "inspector-rejected-op")).length === 0 && (await m.evaluate(() => window.arbor.status().rejected)) === 0);
    await m.close();
  } finally {
    await carol.close();
  }
});

// ------------------------------------------------------------------ React

const web = join(repo, "web");

/** A node_modules folder with react and react-dom: the React example's
 * (react.test.mjs installs it), else a cached npm install of the same
 * versions. */
function reactModules() {
  const example = join(web, "examples/react-outline/node_modules");
  if (existsSync(join(example, "react-dom/client.js"))) return example;
  const dir = join(tmpdir(), "arbor-inspector-react");
  if (!existsSync(join(dir, "node_modules/react-dom/client.js"))) {
    execFileSync("npm", ["install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error", "react@19.3.1", "react-dom@19.3.1"], { stdio: ["ignore", "inherit", "inherit"] });
  }
  return join(dir, "node_modules");
}

/** The page: the replica opened and connected, the package's Inspector
 * rendered with `window.showNode(id)` choosing its node. */
const REACT_PAGE = `
import { createElement as h } from "react";
import { createRoot } from "react-dom/client";
import { Arbor } from ${JSON.stringify(join(web, "src/arbor.ts"))};
import { ArborProvider, Inspector } from ${JSON.stringify(join(web, "react/index.ts"))};
const q = new URLSearchParams(location.search);
const arbor = await Arbor.open({ space: q.get("space"), workerUrl: new URL("./arbor-worker.js", location.href) });
const connection = { server: q.get("server"), token: q.get("token") };
await arbor.connect(connection);
const root = createRoot(document.getElementById("app"));
const show = (node) => root.render(h(ArborProvider, { arbor }, h(Inspector, { node })));
show(null);
Object.assign(window, { arbor, showNode: show, reconnect: () => arbor.connect(connection) });
`;

/** Bundles REACT_PAGE with the worker and wasm of web/dist into a folder,
 * served on a port of its own; resolves to its URL and a stop. */
async function serveReactPage() {
  const dir = mkdtempSync(join(tmpdir(), "arbor-inspector-page-"));
  writeFileSync(join(dir, "main.js"), REACT_PAGE);
  writeFileSync(join(dir, "index.html"), '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><div id="app"></div><script type="module" src="app.js"></script>');
  await build({
    entryPoints: [join(dir, "main.js")],
    outfile: join(dir, "app.js"),
    bundle: true,
    format: "esm",
    target: "es2022",
    nodePaths: [reactModules()],
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
  });
  for (const f of ["arbor-worker.js", "arbor_client_web_bg.wasm"]) copyFileSync(join(web, "dist", f), join(dir, f));
  const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };
  const http = createServer((req, res) => {
    let file = join(dir, normalize(new URL(req.url, "http://x").pathname).replace(/^(\.\.[/\\])+/, ""));
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, "index.html");
    if (!file.startsWith(dir) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    createReadStream(file).pipe(res);
  });
  await new Promise((ok) => http.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${http.address().port}`,
    async stop() {
      await new Promise((ok) => http.close(ok));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("the React Inspector: outbox, recent ops with authors, the lookup, a few renders for a burst", async () => {
  const site = await serveReactPage();
  const dave = await launch();
  try {
    const token = (await (await fetch(`${server.url}/dev/token?space=${SPACE}&user=dave`)).json()).token;
    const d = await dave.context.newPage();
    d.on("pageerror", (e) => console.error("[dave] page error:", e.message));
    await d.goto(`${site.url}/?${new URLSearchParams({ space: SPACE, server: server.url, token })}`);
    const panel = d.getByTestId("inspector");
    const inPanel = (testid) => d.evaluate((testid) => [...document.querySelectorAll(`[data-testid="inspector"] [data-testid="${testid}"]`)].map((el) => ({ ...el.dataset })), testid);
    await until("dave's inspector shows live", async () => (await d.locator('[data-testid="inspector-status"]').getAttribute("data-state").catch(() => null)) === "live");

    // Offline: the create and its title are pending; online, they are
    // committed, by dave.
    await d.evaluate(() => window.arbor.disconnect());
    const x = await d.evaluate((root) => window.arbor.create(root, "last", { title: "dave's" }), ROOT);
    await until("the Inspector lists the pending ops", async () => {
      const ops = await inPanel("inspector-outbox-op");
      return ops.length === 2 && ops.every((o) => o.node === x);
    });
    assert.match(await d.getByTestId("inspector-outbox").textContent(), /created .* under ROOT/);
    await d.evaluate(() => window.reconnect());
    await until("committed: the outbox is empty and the ops are recent, by dave", async () => {
      const recent = (await inPanel("inspector-recent-op")).filter((o) => o.node === x);
      return (await inPanel("inspector-outbox-op")).length === 0 && recent.length === 2 && recent.every((o) => o.author === "dave");
    });

    // Bob moves it: the lookup names bob's move.
    await until("bob has dave's node", () => b.evaluate(async (x) => (await window.arbor.node(x)) !== null, x));
    const p = await b.evaluate(async (x) => {
      const p = await window.arbor.create("00000000-0000-0000-0000-000000000000", "last", { title: "bob's folder" });
      await window.arbor.move(x, p, "last");
      return p;
    }, x);
    await d.evaluate((x) => window.showNode(x), x);
    await until("the lookup names bob's move", async () => {
      const el = d.getByTestId("inspector-last-move");
      return (await el.count()) === 1 && (await el.getAttribute("data-author")) === "bob" && (await el.getAttribute("data-parent")) === p;
    });
    assert.deepEqual(
      (await inPanel("inspector-node-op")).map((o) => o.author),
      ["bob", "dave", "dave"],
    );
    assert.ok((await inPanel("inspector-recent-op")).some((o) => o.node === x && o.author === "bob"));

    // A burst: a few renders, not one per op.
    const renders = async () => Number(await panel.getAttribute("data-renders"));
    const before = await renders();
    const started = Date.now();
    const last = await d.evaluate(async (root) => {
      let id = null;
      for (let i = 0; i < 100; i++) id = await window.arbor.create(root, "last", { title: `dave ${i}` });
      return id;
    }, ROOT);
    await until("the Inspector shows the burst's last op", async () => (await inPanel("inspector-recent-op"))[0]?.node === last);
    const made = (await renders()) - before;
    const elapsed = Date.now() - started;
    assert.ok(made >= 1 && made <= Math.ceil(elapsed / 500) + 2, `${made} renders for 200 ops in ${elapsed} ms`);
  } finally {
    await dave.close();
    await site.stop();
  }
});
