// Takes the demo screenshots in docs/img/ (the README shows them):
// a real `arbor-server dev`, two headless Chromium browsers editing one
// thoughtspace, the trash panel, and the progress bar of a cold start.
//
//   bash scripts/build-web.sh && cargo build -p arbor-sync-server --bin arbor-server
//   node web/scripts/screenshots.mjs
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { launch, openDemo, repo, seedSpace, startServer, titles, until } from "../test/harness.mjs";

const ROOT = "00000000-0000-0000-0000-000000000000";
const out = join(repo, "docs/img");
mkdirSync(out, { recursive: true });

/** An outline worth looking at, made through the page's API. */
async function fill(page) {
  await page.evaluate(async (root) => {
    const a = window.arbor;
    const add = (parent, title) => a.create(parent, "last", { title });
    const plan = await add(root, "Plan the launch");
    for (const t of ["Write the announcement", "Record the demo video", "Check the dashboards"]) await add(plan, t);
    const ideas = await add(root, "Ideas");
    const sync = await add(ideas, "Sync engine");
    for (const t of ["Tree CRDT with moves", "Restore on concurrent delete", "Snapshots over binary COPY"]) await add(sync, t);
    await add(ideas, "Outliner keyboard shortcuts");
    const reading = await add(root, "Reading list");
    await add(reading, "A highly-available move operation for replicated trees");
    const old = await add(root, "Old notes");
    await add(old, "Draft from last year");
    await a.delete(old);
  }, ROOT);
}

const server = await startServer();
const alice = await launch();
const bob = await launch();
try {
  const a = await openDemo(alice.context, server, "demo", "alice");
  // Writes wait for the cold start (docs/BROWSER.md).
  await until("alice live", async () => (await a.evaluate(() => window.arbor.status().state)) === "live");
  await fill(a);
  const b = await openDemo(bob.context, server, "demo", "bob");
  await until("both live", async () =>
    (await a.evaluate(() => window.arbor.status().state)) === "live" &&
    (await b.evaluate(() => window.arbor.status().state)) === "live");
  await until("bob has the outline", async () => (await titles(b)).includes("Reading list"));
  // Expand the sections on bob's side so the tree shows its depth.
  for (const title of ["Plan the launch", "Ideas", "Sync engine", "Reading list"]) {
    await until(`row "${title}"`, async () => (await titles(b)).includes(title));
    await b.evaluate((t) => {
      const row = window.outline.rows().find((r) => r.title === t);
      window.outline.expand(row.id);
    }, title);
    await b.evaluate(() => window.outline.settled());
  }
  await until("the expanded tree", async () => (await titles(b)).includes("Tree CRDT with moves"));
  await until("presence", async () => Number(await b.getByTestId("peers").getAttribute("data-count")) >= 2);
  await b.screenshot({ path: join(out, "demo-outliner.png") });

  const TRASH = "ffffffff-ffff-ffff-ffff-ffffffffffff";
  await until("bob has the delete", async () => (await b.evaluate((t) => window.arbor.children(t), TRASH)).length > 0);
  await b.getByTestId("trash-toggle").click();
  await until("the trash lists the deleted node", async () => (await b.getByTestId("trash-item").count()) > 0);
  await b.screenshot({ path: join(out, "demo-trash.png") });
  await b.getByTestId("trash-close").click();

  await b.getByTestId("offline-toggle").click();
  await until("bob offline", async () => (await b.evaluate(() => window.arbor.status().state)) === "offline");
  await b.evaluate((root) => window.arbor.create(root, "first", { title: "Written offline (queued)" }), ROOT);
  await until("bob shows the offline edit", async () => (await titles(b)).includes("Written offline (queued)"));
  await b.screenshot({ path: join(out, "demo-offline.png") });

  // A cold start: the progress bar while 200k rows stream in.
  seedSpace(server, "big", 200_000);
  const carol = await launch(); // a browser of its own: its own OPFS
  const c = await carol.context.newPage();
  await c.goto(`${server.url}/demo/?space=big&user=carol`);
  await c.waitForFunction(() => {
    const el = document.querySelector('[data-testid="progress-wrap"]');
    const p = document.querySelector('[data-testid="progress"]');
    return el && !el.hidden && p && p.max > 0 && p.value / p.max > 0.2;
  }, null, { timeout: 120_000, polling: 10 });
  await c.screenshot({ path: join(out, "demo-cold-start.png") });
  await c.waitForFunction(() => window.outline?.rows().length === 200_000, null, { timeout: 300_000 });
  // Far down the virtualized list: only the rows on screen exist.
  await c.evaluate(() => window.outline.scrollTo(window.outline.rows()[123_456].id));
  await until("row 123,457 on screen", async () => (await c.getByTestId("row").filter({ has: c.locator("input") }).count()) > 0 &&
    (await c.evaluate(() => [...document.querySelectorAll('[data-testid="title"]')].some((i) => i.value === "node 123457"))));
  await c.screenshot({ path: join(out, "demo-200k.png") });
  await carol.close();
  console.log(`screenshots written to ${out}`);
} finally {
  await alice.close();
  await bob.close();
  await server.stop();
}
