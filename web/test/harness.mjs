// Shared by the Chromium tests and the browser benchmark: a real
// `arbor-server dev` process (with its own Postgres in a temp folder)
// serving the built demo, headless Chromium driven by playwright-core, and
// a way to seed a large thoughtspace straight into Postgres.
import { spawn, execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const repo = resolve(import.meta.dirname, "../..");
const targetDir = process.env.CARGO_TARGET_DIR ?? join(process.env.HOME, ".cache/arbor/target");

/** The environment without settings that would point the dev server
 * elsewhere (its own Postgres and secret are the point). */
function cleanEnv() {
  const env = { ...process.env };
  for (const k of ["DATABASE_URL", "ARBOR_JWT_SECRET", "ARBOR_WEB_DIR", "ARBOR_NOTIFY_URL"]) delete env[k];
  return env;
}

/** Starts `arbor-server dev` on free ports; resolves once its banner is out.
 * It serves `webDir` (default: the built `web/dist`; the benchmark passes
 * copies of two builds to compare them in one run). */
export async function startServer(webDir = join(repo, "web/dist")) {
  const bin = process.env.ARBOR_SERVER_BIN ?? join(targetDir, "debug/arbor-server");
  const dir = mkdtempSync(join(tmpdir(), "arbor-web-"));
  // As root, Postgres runs as `postgres`, which must reach its data folder.
  chmodSync(dir, 0o755);
  const child = spawn(
    bin,
    [
      "dev",
      "--data-dir", dir,
      "--listen", "127.0.0.1:0",
      "--admin-listen", "127.0.0.1:0",
      "--web-dir", webDir,
    ],
    { stdio: ["ignore", "pipe", "inherit"], env: cleanEnv() },
  );
  const banner = {};
  const lines = createInterface({ input: child.stdout });
  await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("arbor-server dev printed no banner in 120 s")), 120_000);
    child.on("exit", (code) => fail(new Error(`arbor-server dev exited with ${code}`)));
    lines.on("line", (line) => {
      const m = line.match(/^\s+(\w+):\s+(.*)$/);
      if (m) banner[m[1]] = m[2].trim();
      if (banner.token) {
        clearTimeout(timer);
        ok();
      }
    });
  });
  if (!banner.demo?.startsWith("http")) throw new Error(`the demo is not served: ${banner.demo}`);
  return {
    url: banner.api,
    postgres: banner.postgres,
    /** The dev token (admin of the dev space). */
    token: banner.token,
    /** The admin listener's metrics URL. */
    metrics: banner.admin,
    /** Its data folder (Postgres, replica images in `images/`). */
    dir,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((ok) => (child.exitCode !== null ? ok() : child.on("exit", ok)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes a thoughtspace of `n` nodes under ROOT (titled "node i") straight
 * into the dev server's Postgres: how it was filled does not matter to a
 * cold start, which reads the tables. */
export function seedSpace(server, space, n) {
  const sql = `
    INSERT INTO spaces (name) VALUES ('${space}');
    INSERT INTO nodes (space, id, parent, key)
      SELECT s.id, md5('${space}' || i)::uuid, '00000000-0000-0000-0000-000000000000',
             -- A valid order key: ordered by i, never ending in 0x00.
             '\\x80'::bytea || int4send(i) || '\\x80'::bytea
      FROM spaces s, generate_series(1, ${Number(n)}) i WHERE s.name = '${space}';
    INSERT INTO payloads (space, node, field, value, hlc, replica)
      SELECT s.id, md5('${space}' || i)::uuid, 'title', 'node ' || i, i, 1
      FROM spaces s, generate_series(1, ${Number(n)}) i WHERE s.name = '${space}';`;
  execFileSync("psql", [server.postgres, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], { stdio: "inherit" });
}

/** A Chromium with its own profile (its own OPFS): a separate browser. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "arbor-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1100, height: 760 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return {
    context,
    /** Its profile folder (its processes' command lines name it). */
    profile,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Opens the demo for `space` as `user` and waits for its first render;
 * `extra` adds URL parameters (e.g. `{ root: id }` for a subtree outline). */
export async function openDemo(context, server, space, user, extra = {}) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${user}] page error:`, e.message));
  page.on("console", (m) => {
    if (m.type() === "error") console.error(`[${user}] console:`, m.text());
  });
  const query = new URLSearchParams({ space, user, ...extra });
  await page.goto(`${server.url}/demo/?${query}`);
  await page.waitForFunction(() => window.outline !== undefined && window.arbor !== undefined, null, { timeout: 60_000 });
  await page.evaluate(() => window.outline.ready);
  return page;
}

/** The titles of the visible rows, in order. */
export async function titles(page) {
  return page.evaluate(() => window.outline.rows().map((r) => r.title));
}

/** Waits until `f(page)` resolves truthy (polling the page, no fixed sleep). */
export async function until(what, f, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await f();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

/** Alice and bob, each in a browser of their own (`launch`) with the demo
 * open on `space` (default `demo`, the one `arbor-server dev` creates),
 * once both are live. */
export async function aliceAndBob(server, space = "demo") {
  const alice = await launch();
  const bob = await launch();
  const a = await openDemo(alice.context, server, space, "alice");
  const b = await openDemo(bob.context, server, space, "bob");
  await until("alice live", () => a.evaluate(() => window.arbor.status().state === "live"));
  await until("bob live", () => b.evaluate(() => window.arbor.status().state === "live"));
  return { alice, bob, a, b };
}

/** Goes offline or back online with the demo's toggle (so the demo and
 * the replica agree on it), and waits for the state. */
export async function setOffline(page, offline) {
  const toggle = page.locator('[data-testid="offline-toggle"]');
  if ((await toggle.getAttribute("data-offline")) !== String(offline)) await toggle.click();
  await until(offline ? "offline" : "live", () =>
    page.evaluate((offline) => (offline ? window.arbor.status().state === "offline" : window.arbor.status().state === "live"), offline),
  );
}

/** Waits until `page`'s outbox is empty (everything it wrote is on the
 * server). */
export function drained(page, who) {
  return until(`${who}'s outbox drained`, () => page.evaluate(() => window.arbor.status().state === "live" && window.arbor.status().outbox === 0));
}
