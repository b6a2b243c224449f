// The browser benchmark (docs/BENCHMARKS.md): in headless Chromium, a cold
// start of a 100k-node thoughtspace into the browser replica (time to the
// first visible page of rows, time to fully hydrated), then local op
// latency through the whole path (page -> worker -> wasm SQLite -> page).
//
//   bash scripts/build-web.sh && cargo build -p arbor-sync-server --bin arbor-server
//   node web/scripts/bench.mjs            # ARBOR_BENCH_RUNS=3, ARBOR_BENCH_NODES=100000
import { launch, seedSpace, startServer } from "../test/harness.mjs";

const RUNS = Number(process.env.ARBOR_BENCH_RUNS ?? 3);
const NODES = Number(process.env.ARBOR_BENCH_NODES ?? 100_000);
const OPS = 500;
const ROOT = "00000000-0000-0000-0000-000000000000";

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

const server = await startServer();
seedSpace(server, "bench", NODES);
const cold = [];
let latency = null;
try {
  for (let run = 0; run < RUNS; run++) {
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
    await page.waitForFunction((n) => window.outline?.rows().length === n, NODES, { timeout: 300_000, polling: 10 });
    const hydrated = await page.evaluate(() => performance.now());
    const firstRow = await page.evaluate(() => window.__firstRow);
    cold.push({ firstRow, hydrated });
    console.log(`run ${run + 1}: first visible page ${firstRow.toFixed(0)} ms, fully hydrated ${hydrated.toFixed(0)} ms`);
    if (run === RUNS - 1) {
      latency = await page.evaluate(
        async ({ ops, root }) => {
          const time = async (f) => {
            const t = performance.now();
            await f();
            return performance.now() - t;
          };
          const create = [];
          const ids = [];
          for (let i = 0; i < ops; i++) {
            create.push(await time(async () => ids.push(await window.arbor.create(root, "first", { title: `bench ${i}` }))));
          }
          const move = [];
          for (let i = 1; i < ops; i++) move.push(await time(() => window.arbor.move(ids[i], ids[i - 1], "last")));
          const set = [];
          for (let i = 0; i < ops; i++) set.push(await time(() => window.arbor.set(ids[i], "title", `renamed ${i}`)));
          const page = [];
          for (let i = 0; i < ops; i++) page.push(await time(() => window.arbor.children(root, { limit: 100 })));
          return { create, move, set, page };
        },
        { ops: OPS, root: ROOT },
      );
    }
    await browser.close();
  }
} finally {
  await server.stop();
}
console.log(`\ncold start of ${NODES} nodes, median of ${RUNS} runs (fresh profile each):`);
console.log(`  first visible page: ${median(cold.map((c) => c.firstRow)).toFixed(0)} ms`);
console.log(`  fully hydrated:     ${median(cold.map((c) => c.hydrated)).toFixed(0)} ms`);
console.log(`local op latency on the loaded replica (${OPS} each, round trip from the page):`);
for (const [name, xs] of Object.entries(latency)) {
  console.log(`  ${name.padEnd(7)} p50 ${pct(xs, 50).toFixed(2)} ms  p99 ${pct(xs, 99).toFixed(2)} ms`);
}
