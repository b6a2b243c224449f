// The browser cold start by rows vs by replica image (docs/BENCHMARKS.md,
// issue 23), side by side in one run: a space of ARBOR_BENCH_NODES nodes
// (default 1,000,000, each with a title) seeded into the dev server, its
// image built once, then each run opens a fresh browser (an empty OPFS)
// twice, once loading rows and once taking the image, and times, from the
// call that opens the replica: until sync is live (the replica holds the
// whole space and is usable), and until the first children page of ROOT,
// asked for right after `connect`, is answered (from the server while the
// cold start runs: progressive hydration); and the browser's peak resident
// memory (every process of its profile, sampled every 100 ms).
//
//   bash scripts/build-web.sh && cargo build -p arbor-sync-server --bin arbor-server
//   node web/scripts/bench-cold.mjs    # ARBOR_BENCH_RUNS=3, ARBOR_BENCH_NODES=1000000
import { readdirSync, readFileSync } from "node:fs";
import { launch, seedSpace, startServer } from "../test/harness.mjs";

const RUNS = Number(process.env.ARBOR_BENCH_RUNS ?? 3);
const NODES = Number(process.env.ARBOR_BENCH_NODES ?? 1_000_000);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Resident memory of every process whose command line names `profile`. */
function rss(profile) {
  let total = 0;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(profile)) continue;
      const kb = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)/m);
      if (kb) total += Number(kb[1]) * 1024;
    } catch {
      // The process ended meanwhile.
    }
  }
  return total;
}

/** In the page: opens the replica, connects, and times live and the first page. */
async function coldStart({ images }) {
  const ROOT = "00000000-0000-0000-0000-000000000000";
  const { Arbor } = await import("/demo/arbor.js");
  const token = (await (await fetch("/dev/token?space=bench&user=bench")).json()).token;
  const t0 = performance.now();
  const arbor = await Arbor.open({ space: "bench", workerUrl: "/demo/arbor-worker.js" });
  const live = new Promise((ok, fail) => {
    arbor.onStatus((s) => {
      if (s.state === "live") ok(performance.now() - t0);
      if (s.state === "refused") fail(new Error(s.error));
    });
  });
  await arbor.connect({ server: location.origin, token, images });
  // Asked at once: while the cold start runs it comes from the server's
  // children endpoint (progressive hydration), not from the replica.
  const first = arbor.children(ROOT, { limit: 100 }).then((page) => {
    if (page.length !== 100) throw new Error(`the first page has ${page.length} rows`);
    return performance.now() - t0;
  });
  const liveMs = await live;
  const firstPageMs = await first;
  // And an edit made at once is applied once the cold start is over.
  return { liveMs, firstPageMs, status: arbor.status() };
}

const server = await startServer();
const results = { rows: [], image: [] };
try {
  seedSpace(server, "bench", NODES);
  // The first request starts the build behind its 404; wait for it.
  const token = (await (await fetch(`${server.url}/dev/token?space=bench&user=bench`)).json()).token;
  const t = Date.now();
  for (;;) {
    const r = await fetch(`${server.url}/v1/spaces/bench/image`, { headers: { authorization: `Bearer ${token}` } });
    if (r.status !== 200 && r.status !== 404) throw new Error(`GET .../image: HTTP ${r.status}`);
    const size = (await r.arrayBuffer()).byteLength;
    if (r.status === 200) {
      console.log(`image built in about ${((Date.now() - t) / 1000).toFixed(1)} s: ${(size / 1e6).toFixed(1)} MB compressed, ${(Number(r.headers.get("arbor-image-size")) / 1e6).toFixed(1)} MB`);
      break;
    }
    if (Date.now() - t > 600_000) throw new Error("no image after 10 minutes");
    await new Promise((ok) => setTimeout(ok, 500));
  }
  for (let run = 0; run < RUNS; run++) {
    for (const mode of ["rows", "image"]) {
      const browser = await launch();
      let peak = 0;
      const sampler = setInterval(() => (peak = Math.max(peak, rss(browser.profile))), 100);
      try {
        const page = await browser.context.newPage();
        page.on("console", (m) => {
          if (m.type() === "warning" || m.type() === "error") console.log(`  [${mode}] console: ${m.text()}`);
        });
        await page.goto(`${server.url}/demo/style.css`);
        const r = await page.evaluate(coldStart, { images: mode === "image" });
        peak = Math.max(peak, rss(browser.profile));
        results[mode].push({ ...r, peak });
        console.log(`run ${run + 1} ${mode}: live ${r.liveMs.toFixed(0)} ms, first page ${r.firstPageMs.toFixed(0)} ms, peak ${(peak / 2 ** 20).toFixed(0)} MiB, storage ${r.status.storage}`);
      } finally {
        clearInterval(sampler);
        await browser.close();
      }
    }
  }
} finally {
  await server.stop();
}
console.log();
console.log(`| browser cold start of ${NODES} nodes, median of ${RUNS} | rows | image |`);
console.log("|---|---|---|");
const row = (name, f) => console.log(`| ${name} | ${f(results.rows)} | ${f(results.image)} |`);
row("open to sync live (replica usable), ms", (xs) => median(xs.map((x) => x.liveMs)).toFixed(0));
row("open to the first page of ROOT (asked at connect), ms", (xs) => median(xs.map((x) => x.firstPageMs)).toFixed(0));
row("peak browser RSS (all its processes), MiB", (xs) => (median(xs.map((x) => x.peak)) / 2 ** 20).toFixed(0));
console.log(`| image / rows (live) | | ${(median(results.image.map((x) => x.liveMs)) / median(results.rows.map((x) => x.liveMs))).toFixed(2)}x |`);
