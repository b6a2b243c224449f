// The session transcripts of client/tests/transcripts/ played against the
// browser driver: the wasm client in its Web Worker in headless Chromium,
// talking to a scripted HTTP and WebSocket server in this process. The
// same files are played against the session itself and the native driver
// by client/tests/it/transcripts.rs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join, extname } from "node:path";
import { WebSocketServer } from "ws";
import { repo, launch, until } from "./harness.mjs";

const dir = join(repo, "client/tests/transcripts");
const dist = join(repo, "web/dist");
const fixture = readFileSync(join(dir, "empty-at-3.snapshot"));
const FIXTURE_HEAD = 3;
const LIMIT_MS = 10_000;

/** The wire codes and their dispositions, from docs/PROTOCOL.md's table
 * (which a Rust test holds equal to the ErrorCode enum). */
function wireCodes() {
  const text = readFileSync(join(repo, "docs/PROTOCOL.md"), "utf8");
  const codes = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^\| `([a-z_]+)` \| (\d+) \| [^|]+ \| (retry|reauth|resnapshot|restamp|refuse) \| wire \|/);
    if (m) codes.push({ code: m[1], disposition: m[3] });
  }
  assert.ok(codes.length > 20, "the code table of docs/PROTOCOL.md was not found");
  return codes;
}

function replace(v, from, to) {
  if (v === from) return to;
  if (Array.isArray(v)) return v.map((x) => replace(x, from, to));
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, replace(x, from, to)]));
  return v;
}

function transcripts() {
  const codes = wireCodes();
  const out = [];
  for (const f of readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
    const t = JSON.parse(readFileSync(join(dir, f), "utf8"));
    if (!t.each_code) {
      out.push(t);
      continue;
    }
    for (const { code } of codes.filter((c) => c.disposition === t.each_code)) {
      out.push({ ...replace(t, "$code", code), name: `${t.name} [${code}]` });
    }
  }
  return out;
}

const MIME = { ".js": "text/javascript", ".wasm": "application/wasm", ".map": "application/json", ".html": "text/html" };

/** A queue whose `next()` waits (bounded) for the next item. */
class Inbox {
  #items = [];
  #waiters = [];
  push(item) {
    const w = this.#waiters.shift();
    if (w) w(item);
    else this.#items.push(item);
  }
  next(what) {
    if (this.#items.length) return Promise.resolve(this.#items.shift());
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`waited ${LIMIT_MS} ms for ${what}`)), LIMIT_MS);
      this.#waiters.push((item) => {
        clearTimeout(timer);
        ok(item);
      });
    });
  }
}

function refuse(res, answer) {
  res.writeHead(answer.status, { "content-type": "application/json" });
  res.end(answer.code ? JSON.stringify({ error: { code: answer.code, message: "scripted" } }) : "scripted");
}

/** The scripted server: static files of web/dist, the snapshot and the
 * socket answered as the transcript says. */
async function scriptedServer(silent) {
  const seen = new Inbox();
  const state = { socket: null, lastRefusal: null };
  const http = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/v1/spaces/s/snapshot") {
      seen.push({ kind: "snapshot", answer: (a) => (a.status ? refuse(res, a) : res.end(fixture)) });
    } else if (url.pathname === "/v1/spaces/s/ops") {
      // The browser driver asks why an upgrade failed.
      if (state.lastRefusal) refuse(res, state.lastRefusal);
      else res.end(JSON.stringify({ ops: [], head_seq: FIXTURE_HEAD }));
    } else if (url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<!doctype html><title>transcripts</title>");
    } else {
      const file = join(dist, url.pathname.replace(/^\/+/, ""));
      if (!file.startsWith(dist) || !existsSync(file)) {
        res.writeHead(404);
        res.end();
        return;
      }
      res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream" });
      res.end(readFileSync(file));
    }
  });
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (p) => (p.has("arbor.v1") ? "arbor.v1" : false) });
  http.on("upgrade", (req, sock, head) => {
    seen.push({
      kind: "upgrade",
      answer: (a) => {
        if (a.status) {
          state.lastRefusal = a;
          const body = a.code ? JSON.stringify({ error: { code: a.code, message: "scripted" } }) : "scripted";
          sock.end(`HTTP/1.1 ${a.status} Refused\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
          return;
        }
        state.lastRefusal = null;
        wss.handleUpgrade(req, sock, head, (ws) => {
          state.socket = ws;
          ws.serverClosed = false;
          ws.on("message", (data) => {
            const text = data.toString();
            if (!silent && JSON.parse(text).type === "ping") ws.send(JSON.stringify({ type: "pong" }));
            else seen.push({ kind: "frame", text });
          });
          ws.on("close", () => {
            if (!ws.serverClosed) seen.push({ kind: "closed" });
          });
        });
      },
    });
  });
  await new Promise((ok) => http.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${http.address().port}`,
    seen,
    state,
    async stop() {
      for (const c of wss.clients) c.terminate();
      http.closeAllConnections();
      await new Promise((ok) => http.close(ok));
    },
  };
}

async function play(browser, t) {
  const server = await scriptedServer(t.silent ?? false);
  const page = await browser.context.newPage();
  page.on("pageerror", (e) => console.error(`[${t.name}] page error:`, e.message));
  try {
    await page.goto(server.url);
    await page.evaluate(async (url) => {
      const { Arbor } = await import(`${url}/arbor.js`);
      window.arbor = await Arbor.open({ space: "s", memory: true });
      window.arbor.onStatus((s) => (window.status_ = s));
      window.status_ = window.arbor.status;
      await window.arbor.connect({ server: url, token: "scripted-token", keepaliveMs: 300 });
    }, server.url);
    let head = FIXTURE_HEAD;
    let lastPush = null;
    const sub = (v) => (lastPush ? replace(v, "$batch", lastPush.batch) : v);
    const send = (text) => {
      assert.ok(server.state.socket, `${t.name}: no socket`);
      server.state.socket.send(text);
    };
    // The next thing seen, skipping pings when not asked for them.
    const next = async (what, wantPing) => {
      for (;;) {
        const s = await server.seen.next(`${what} (${t.name})`);
        if (s.kind === "frame" && !wantPing && JSON.parse(s.text).type === "ping") continue;
        return s;
      }
    };
    for (const step of t.steps) {
      const [kind, arg] = Object.entries(step)[0];
      switch (kind) {
        case "expect_snapshot":
        case "expect_connect": {
          const s = await next(kind, false);
          assert.equal(s.kind, kind === "expect_snapshot" ? "snapshot" : "upgrade", `${t.name}: ${kind}, saw ${s.kind}`);
          if (kind === "expect_snapshot" && !arg.status) head = FIXTURE_HEAD;
          s.answer(arg);
          break;
        }
        case "expect_hello":
        case "expect_push":
        case "expect_ping": {
          const s = await next(kind, kind === "expect_ping");
          assert.equal(s.kind, "frame", `${t.name}: ${kind}, saw ${s.kind}`);
          const msg = JSON.parse(s.text);
          if (kind === "expect_hello") {
            assert.equal(msg.type, "hello", `${t.name}: ${s.text}`);
            assert.equal(msg.cursor, arg.cursor, `${t.name}: hello cursor`);
          } else if (kind === "expect_push") {
            assert.equal(msg.type, "push", `${t.name}: ${s.text}`);
            assert.equal(msg.ops.length, arg.ops, `${t.name}: ops pushed`);
            lastPush = msg;
          } else {
            assert.equal(msg.type, "ping", `${t.name}: ${s.text}`);
          }
          break;
        }
        case "expect_disconnect": {
          const s = await next(kind, false);
          assert.equal(s.kind, "closed", `${t.name}: expected a disconnect, saw ${s.kind}`);
          break;
        }
        case "expect_stop":
          await until(`${t.name}: the client stops`, () => page.evaluate(() => window.status_?.state === "refused"), LIMIT_MS);
          break;
        case "send":
          send(JSON.stringify(sub(arg)));
          break;
        case "commit": {
          assert.ok(lastPush, `${t.name}: nothing was pushed`);
          const ops = lastPush.ops.map((op) => ({ seq: ++head, op }));
          send(JSON.stringify({ type: "ops", ops }));
          send(JSON.stringify({ type: "ack", batch: lastPush.batch }));
          break;
        }
        case "close":
          server.state.socket.serverClosed = true;
          server.state.socket.close(arg.code, "scripted");
          break;
        case "local":
          await page.evaluate(async (n) => {
            for (let i = 0; i < n; i++) await window.arbor.create("00000000-0000-0000-0000-000000000000");
          }, arg.ops);
          break;
        case "status":
          await until(
            `${t.name}: status ${JSON.stringify(arg)}`,
            () =>
              page.evaluate((want) => {
                const s = window.status_;
                if (!s) return false;
                return (
                  (want.state === undefined || want.state === s.state) &&
                  (want.cursor === undefined || want.cursor === s.cursor) &&
                  (want.outbox === undefined || want.outbox === s.outbox) &&
                  (want.rejected === undefined || want.rejected === s.rejected)
                );
              }, arg),
            LIMIT_MS,
          );
          break;
        default:
          throw new Error(`${t.name}: unknown step ${kind}`);
      }
    }
    // The rejected list the API returns is what the status counts, and
    // clearing it empties it.
    const { count, listed, cleared, after } = await page.evaluate(async () => {
      const count = window.status_.rejected;
      const listed = (await window.arbor.rejected()).map((r) => r.code);
      const cleared = await window.arbor.clearRejected();
      const after = (await window.arbor.rejected()).length;
      return { count, listed, cleared, after };
    });
    assert.equal(listed.length, count, `${t.name}: rejected ${JSON.stringify(listed)}`);
    assert.equal(cleared, count);
    assert.equal(after, 0);
  } finally {
    await page.close();
    await server.stop();
  }
}

test("the browser driver follows every session transcript", async () => {
  const browser = await launch();
  try {
    const all = transcripts();
    assert.ok(all.length > 40, `${all.length} transcripts`);
    for (const t of all) await play(browser, t);
  } finally {
    await browser.close();
  }
});
