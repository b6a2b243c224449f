// The browser benchmark (docs/BENCHMARKS.md): in headless Chromium, a cold
// start of a large thoughtspace into the browser replica (time to the first
// visible page of rows, time to fully hydrated), then local op latency
// through the whole path (page -> worker -> wasm SQLite -> page), with a
// breakdown of where it goes.
//
//   bash scripts/build-web.sh && cargo build -p arbor-sync-server --bin arbor-server
//   node web/scripts/bench.mjs     # ARBOR_BENCH_RUNS=3, ARBOR_BENCH_NODES=100000
//
// ARBOR_BENCH_WEB_DIRS=dirA,dirB compares builds side by side in one run
// (copies of web/dist made before and after a change): each gets a server
// of its own with the same seeded space, and the runs alternate between
// them so what the machine does meanwhile falls on both.
import { join } from "node:path";
import { launch, repo, seedSpace, startServer } from "../test/harness.mjs";

const RUNS = Number(process.env.ARBOR_BENCH_RUNS ?? 3);
const NODES = Number(process.env.ARBOR_BENCH_NODES ?? 100_000);
const DIRS = (process.env.ARBOR_BENCH_WEB_DIRS ?? join(repo, "web/dist")).split(",");
const OPS = 500;
const ROOT = "00000000-0000-0000-0000-000000000000";

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

/** In the page: each kind of local op `ops` times, timed three ways: until
 * the call resolves, until the page's change listener hears of it, and
 * until the page's event loop is free again (the outline's work on the
 * main thread included). `ping` is a call that touches neither SQLite nor
 * the tree (`canUndo`): the messaging alone. */
async function measure({ ops, root }) {
  const arbor = window.arbor;
  // The change event of the op being timed: `mine(changes)` says whether
  // an event is it (the echoes of earlier ops from the server also come as
  // change events, usually empty).
  let wait = null;
  arbor.subscribe((c) => {
    if (wait && wait.mine(c)) wait.heard(performance.now());
  });
  const seen = new Set();
  const idle = () => new Promise((r) => setTimeout(r, 0));
  const time = async (f, mine) => {
    const t = performance.now();
    // Bounded: a change event that never comes fails the run, not hangs it.
    const event = mine
      ? new Promise((heard, fail) => {
          wait = { mine, heard };
          setTimeout(() => fail(new Error("no change event within 10 s")), 10_000);
        })
      : null;
    const v = await f();
    const call = performance.now() - t;
    // When the change event came, whether before the call resolved (a
    // write is shown before it is saved) or after.
    const heardAt = event ? await event : performance.now();
    wait = null;
    const changed = heardAt - t;
    await idle();
    return { call, changed, idle: performance.now() - t, v };
  };
  const out = { ping: [], create: [], move: [], set: [], page: [] };
  for (let i = 0; i < ops; i++) out.ping.push(await time(() => arbor.canUndo(), null));
  const ids = [];
  for (let i = 0; i < ops; i++) {
    const r = await time(
      () => arbor.create(root, "first", { title: `bench ${i}` }),
      (c) => c.fields.some((id) => !seen.has(id)),
    );
    seen.add(r.v);
    ids.push(r.v);
    out.create.push(r);
  }
  for (let i = 1; i < ops; i++) {
    out.move.push(await time(() => arbor.move(ids[i], ids[i - 1], "last"), (c) => c.moved.includes(ids[i])));
  }
  for (let i = 0; i < ops; i++) {
    out.set.push(await time(() => arbor.set(ids[i], "title", `renamed ${i}`), (c) => c.fields.includes(ids[i])));
  }
  for (let i = 0; i < ops; i++) out.page.push(await time(() => arbor.children(root, { limit: 100 }), null));
  for (const xs of Object.values(out)) for (const x of xs) delete x.v;
  return out;
}

const servers = [];
const results = DIRS.map(() => ({ cold: [], online: {}, offline: {} }));
try {
  for (const dir of DIRS) {
    const server = await startServer(dir);
    seedSpace(server, "bench", NODES);
    servers.push(server);
  }
  for (let run = 0; run < RUNS; run++) {
    for (let d = 0; d < DIRS.length; d++) {
      const server = servers[d];
      const browser = await launch(); // a fresh profile: an empty OPFS
      const page = await browser.context.newPage();
      await page.addInitScript(() => {
        // Times are from navigation start (performance.now() origin).
        new MutationObserver((_, obs) => {
          if (document.querySelector('[data-testid="row"]')) {
            window.__firstRow = performance.now();
            obs.disconnect();
          }
        }).observe(document, { childList: true, subtree: true });
      });
      await page.goto(`${server.url}/demo/?space=bench&user=bench${run}`);
      // At least: each run adds its own ops' nodes to the space.
      await page.waitForFunction((n) => window.outline?.rows().length >= n, NODES, { timeout: 600_000, polling: 10 });
      const hydrated = await page.evaluate(() => performance.now());
      const firstRow = await page.evaluate(() => window.__firstRow);
      results[d].cold.push({ firstRow, hydrated });
      console.log(`${DIRS[d]} run ${run + 1}: first visible page ${firstRow.toFixed(0)} ms, fully hydrated ${hydrated.toFixed(0)} ms`);
      // Online (the edits sync as they are made: the worker also pushes
      // them and applies their echoes), then offline (the local path alone).
      const online = await page.evaluate(measure, { ops: OPS, root: ROOT });
      for (const [k, xs] of Object.entries(online)) (results[d].online[k] ??= []).push(...xs);
      await page.evaluate(() => window.arbor.disconnect());
      const offline = await page.evaluate(measure, { ops: OPS, root: ROOT });
      for (const [k, xs] of Object.entries(offline)) (results[d].offline[k] ??= []).push(...xs);
      await browser.close();
    }
  }
} finally {
  for (const s of servers) await s.stop();
}
for (let d = 0; d < DIRS.length; d++) {
  const { cold, online, offline } = results[d];
  console.log(`\n== ${DIRS[d]}`);
  console.log(`cold start of ${NODES} nodes, median of ${RUNS} runs (fresh profile each):`);
  console.log(`  first visible page: ${median(cold.map((c) => c.firstRow)).toFixed(0)} ms`);
  console.log(`  fully hydrated:     ${median(cold.map((c) => c.hydrated)).toFixed(0)} ms`);
  for (const [mode, ops] of [["online", online], ["offline", offline]]) {
    console.log(`local ops on the loaded replica, ${mode} (${OPS} each per run, ${RUNS} runs), ms:`);
    console.log(`  op      call p50    p99   change event p50    p99   page idle again p50    p99`);
    for (const [name, xs] of Object.entries(ops)) {
      const col = (k) => `${pct(xs.map((x) => x[k]), 50).toFixed(2).padStart(6)} ${pct(xs.map((x) => x[k]), 99).toFixed(2).padStart(6)}`;
      console.log(`  ${name.padEnd(7)} ${col("call")}       ${col("changed")}            ${col("idle")}`);
    }
  }
}
