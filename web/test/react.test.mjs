// The npm package and its React hooks, as an application gets them: packs
// @arbor/web (scripts/package.mjs), installs the tarball into
// examples/react-outline, builds the example (tsc against the package's
// declarations, esbuild), serves it from its own origin, and runs it in
// two Chromium browsers against a real `arbor-server dev`: offline and
// online edits converge, a change re-renders only the components whose
// data changed (render counts), and refused edits are shown.
//
//   node --test --test-concurrency=1 web/test/react.test.mjs
//   (after scripts/build-web.sh and cargo build -p arbor-sync-server;
//   needs the npm registry for the example's react, react-dom, esbuild)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createReadStream, existsSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { launch, repo, startServer, until } from "./harness.mjs";

const ROOT = "00000000-0000-0000-0000-000000000000";
const web = join(repo, "web");
const example = join(web, "examples/react-outline");
const SPACE = "demo"; // the one thoughtspace `arbor-server dev` creates
let server;
let site;
let alice;
let bob;

/** Packs the package, installs the tarball into the example, builds it. */
function buildExample() {
  const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ["ignore", "inherit", "inherit"] });
  run("node", ["scripts/package.mjs"], web);
  assert.ok(existsSync(join(web, "pack/arbor-web-0.1.0.tgz")), "the tarball the example depends on");
  // Same name and version as a previous pack: make npm take the new tarball.
  rmSync(join(example, "node_modules/@arbor"), { recursive: true, force: true });
  run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], example);
  run("npm", ["run", "build", "--silent"], example);
}

/** Serves the example's dist/ on a port of its own (another origin than
 * the sync server's: the page reaches the server by CORS and WebSocket,
 * as a deployed application would). */
async function serveExample() {
  const root = join(example, "dist");
  const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".map": "application/json" };
  const http = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    let file = join(root, path);
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, "index.html");
    if (!file.startsWith(root) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    createReadStream(file).pipe(res);
  });
  await new Promise((ok) => http.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${http.address().port}`, stop: () => new Promise((ok) => http.close(ok)) };
}

async function token(user) {
  const res = await fetch(`${server.url}/dev/token?space=${SPACE}&user=${user}`);
  assert.equal(res.status, 200);
  return (await res.json()).token;
}

/** Opens the example as `user`; resolves once it is live. */
async function openApp(browser, user) {
  const page = await browser.context.newPage();
  page.on("pageerror", (e) => console.error(`[${user}] page error:`, e.message));
  page.on("console", (m) => {
    if (m.type() === "error") console.error(`[${user}] console:`, m.text());
  });
  const query = new URLSearchParams({ space: SPACE, user, server: server.url, token: await token(user) });
  await page.goto(`${site.url}/?${query}`);
  await page.waitForFunction(() => window.arbor !== undefined, null, { timeout: 60_000 });
  await until(`${user} live`, async () => (await page.getByTestId("state").getAttribute("data-state")) === "live");
  return page;
}

/** The rendered outline: [{t: title, c: children}], in order. */
function tree(page) {
  return page.evaluate(() => {
    const walk = (ul) => (ul ? [...ul.children].map((li) => ({ t: li.dataset.title, c: walk(li.querySelector(":scope > ul")) })) : []);
    return walk(document.querySelector('[data-testid="outline"] > ul'));
  });
}

const flat = (t) => t.flatMap((n) => [n.t, ...flat(n.c)]);
const rowTitle = (page, id) => page.locator(`[data-testid="row"][data-id="${id}"]`).getAttribute("data-title");
const state = (page) => page.getByTestId("state").getAttribute("data-state");

before(async () => {
  buildExample();
  server = await startServer();
  site = await serveExample();
  alice = await launch();
  bob = await launch();
});

after(async () => {
  await alice?.close();
  await bob?.close();
  await site?.stop();
  await server?.stop();
});

test("the example app from the packed tarball: offline and online edits converge in two browsers", async () => {
  const a = await openApp(alice, "alice");
  const b = await openApp(bob, "bob");
  // Presence through the hooks: each shows its own state (usePresence,
  // set with useSetPresence) and lists the other by name (usePeers).
  await until("alice's own presence", async () => (await a.getByTestId("me").textContent()) === "alice");
  await until("alice lists bob", async () => (await a.getByTestId("peers").textContent()).includes("bob"));
  await until("bob lists alice", async () => (await b.getByTestId("peers").textContent()).includes("alice"));

  // An edit through the UI reaches the other browser.
  await a.getByTestId("add-title").fill("first item");
  await a.getByTestId("add-title").press("Enter");
  await until("bob sees alice's item", async () => flat(await tree(b)).includes("first item"));
  const first = await a.evaluate(
    async (root) => (await window.arbor.children(root)).find((k) => k.fields.title === "first item").id,
    ROOT,
  );

  // Alice's browser loses the network: the app hears `offline` and stops syncing.
  await alice.context.setOffline(true);
  await until("alice offline", async () => (await state(a)) === "offline");
  assert.equal(await a.evaluate(() => navigator.onLine), false);
  await a.getByTestId("add-title").fill("alice offline edit");
  await a.getByTestId("add-title").press("Enter");
  await a.evaluate((id) => window.arbor.set(id, "title", "first item, renamed offline"), first);
  // Bob, online, edits too: a new item, and a child of the same node.
  await b.getByTestId("add-title").fill("bob online edit");
  await b.getByTestId("add-title").press("Enter");
  await b.evaluate((id) => window.arbor.create(id, "last", { title: "bob's child" }), first);
  await until("alice shows her offline edits", async () => {
    const t = flat(await tree(a));
    return t.includes("alice offline edit") && t.includes("first item, renamed offline");
  });
  await until("alice's edits queued", async () => Number(await a.getByTestId("outbox").getAttribute("data-count")) >= 2);
  await until("bob shows his edits", async () => {
    const t = flat(await tree(b));
    return t.includes("bob online edit") && t.includes("bob's child");
  });
  // Bob has his own edits, and none of alice's queued ones.
  const bobOffline = flat(await tree(b));
  assert.ok(!bobOffline.includes("alice offline edit") && bobOffline.includes("first item"), JSON.stringify(bobOffline));
  assert.ok(!flat(await tree(a)).includes("bob online edit"));

  // Back online: the app reconnects, and both converge.
  await alice.context.setOffline(false);
  await until("alice live again", async () => (await state(a)) === "live");
  await until("the same tree in both, with every edit", async () => {
    const [ta, tb] = [await tree(a), await tree(b)];
    const all = flat(ta);
    return (
      JSON.stringify(ta) === JSON.stringify(tb) &&
      ["alice offline edit", "bob online edit", "first item, renamed offline", "bob's child"].every((t) => all.includes(t))
    );
  });
  await until("alice's outbox drained", async () => (await a.getByTestId("outbox").getAttribute("data-count")) === "0");
  const final = await tree(a);
  assert.deepEqual(
    final.find((n) => n.t === "first item, renamed offline").c.map((n) => n.t),
    ["bob's child"],
  );
  assert.equal(await a.getByTestId("rejected").count(), 0, "nothing refused");
  await a.close();
  await b.close();
});

test("a change to node X re-renders X's row and the lists holding X, never the row of node Y", async () => {
  const a = await openApp(alice, "alice");
  const b = await openApp(bob, "bob");
  const [x, y, z] = await a.evaluate(async (root) => {
    const x = await window.arbor.create(root, "last", { title: "render x" });
    const y = await window.arbor.create(root, "last", { title: "render y" });
    const z = await window.arbor.create(y, "last", { title: "render z" });
    return [x, y, z];
  }, ROOT);
  await until("x, y and z rendered", async () => (await rowTitle(a, z)) === "render z" && (await rowTitle(a, x)) === "render x");
  await until("alice's creates acknowledged", async () => (await a.getByTestId("outbox").getAttribute("data-count")) === "0");
  // Everything the rows read has answered and rendered.
  const counts = async () => {
    await a.evaluate(() => window.arborIdle());
    return a.evaluate(() => ({ ...window.renders }));
  };
  const c0 = await counts();

  // A remote edit of x's title (from bob's browser).
  await until("bob has x", async () => (await rowTitle(b, x)) === "render x");
  await b.evaluate((id) => window.arbor.set(id, "title", "render x, renamed by bob"), x);
  await until("alice shows the new title", async () => (await rowTitle(a, x)) === "render x, renamed by bob");
  const c1 = await counts();
  assert.ok(c1[x] > c0[x], "x's row re-rendered");
  assert.ok(c1[`children:${ROOT}`] > c0[`children:${ROOT}`], "the list holding x re-rendered");
  assert.equal(c1[y], c0[y], "y's row did not re-render");
  assert.equal(c1[z], c0[z], "z's row did not re-render");
  assert.equal(c1[`children:${y}`], c0[`children:${y}`], "y's list did not re-render");

  // A local move of x: every node read is read again (a move can change
  // `deleted` below it), but only x's value changed.
  await a.evaluate((id) => window.arbor.move(id, "00000000-0000-0000-0000-000000000000", "first"), x);
  await until("x first", async () => (await tree(a))[0]?.t === "render x, renamed by bob");
  const c2 = await counts();
  assert.ok(c2[x] > c1[x], "x's row re-rendered (its key changed)");
  assert.equal(c2[y], c1[y], "y's row did not re-render");
  assert.equal(c2[z], c1[z], "z's row did not re-render");
  assert.equal(c2[`children:${y}`], c1[`children:${y}`], "y's list did not re-render");

  // A change to z (y's child): z's row and y's list, not y's row.
  await b.evaluate((id) => window.arbor.set(id, "title", "render z, renamed by bob"), z);
  await until("alice shows z's new title", async () => (await rowTitle(a, z)) === "render z, renamed by bob");
  const c3 = await counts();
  assert.ok(c3[z] > c2[z], "z's row re-rendered");
  assert.ok(c3[`children:${y}`] > c2[`children:${y}`], "y's list (holding z) re-rendered");
  assert.equal(c3[y], c2[y], "y's row did not re-render");
  assert.equal(c3[x], c2[x], "x's row did not re-render");
  await a.close();
  await b.close();
});

test("useRejected shows the edits the server refused, until they are dismissed", async () => {
  // Alice's browser holds a replica whose id alice owns on the server once
  // she has pushed with it. Opened there by another user, its next push is
  // refused for good (wrong_replica): the app must show it.
  const a = await openApp(alice, "alice");
  await a.evaluate((root) => window.arbor.create(root, "last", { title: "alice owns this replica" }), ROOT);
  await until("alice's push acknowledged", async () => (await a.getByTestId("outbox").getAttribute("data-count")) === "0");
  await a.close();
  const m = await openApp(alice, "mallory");
  await m.getByTestId("add-title").fill("mallory's edit");
  await m.getByTestId("add-title").press("Enter");
  const shown = m.getByTestId("rejected");
  await until("the refused edits listed", async () => {
    // A refusal reloads a snapshot, and calls meanwhile fail `busy`.
    const listed = await m.evaluate(async () => (await window.arbor.rejected().catch(() => [])).length);
    const outbox = await m.evaluate(() => window.arbor.status().outbox);
    return listed > 0 && outbox === 0 && (await shown.count()) === 1 && Number(await shown.getAttribute("data-count")) === listed;
  });
  assert.match(await shown.textContent(), /wrong_replica/);
  await m.getByTestId("dismiss").click();
  await until("dismissed", async () => (await shown.count()) === 0);
  await until("the list emptied", () => m.evaluate(async () => (await window.arbor.rejected()).length === 0));
  await m.close();
});
