// Presence in the browser client and the demo, in real headless Chromium
// against a real `arbor-server dev`: two browsers (two users, two tokens)
// on one thoughtspace. A state set in one shows in the other's status (and
// as a cursor on the other's outline), clearing it and closing the page
// take it away, a state over 2,048 bytes is refused and never sent, and a
// follower tab's state reaches the server and survives a change of owner.
//
//   node --test --test-concurrency=1 web/test/presence.test.mjs
//   (after scripts/build-web.sh and cargo build -p arbor-sync-server)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, openDemo, startServer, titles, until } from "./harness.mjs";

const ROOT = "00000000-0000-0000-0000-000000000000";
const SPACE = "demo"; // the one thoughtspace `arbor-server dev` creates
let server;
let alice;
let bob;

before(async () => {
  server = await startServer();
  alice = await launch();
  bob = await launch();
});

after(async () => {
  await alice?.close();
  await bob?.close();
  await server?.stop();
});

/** The states of `sub`'s connections as `page`'s status lists them. */
function statesOf(page, sub) {
  return page.evaluate((sub) => window.arbor.status().peers.filter((p) => p.sub === sub).map((p) => p.state), sub);
}

/** Starts recording, in `page`, every peers list `onPeers` reports. */
function recordPeers(page) {
  return page.evaluate(() => {
    window.__peerEvents = [];
    window.__stopPeers?.();
    window.__stopPeers = window.arbor.onPeers((peers) => window.__peerEvents.push(peers));
  });
}

/** The cursor chips drawn in `page`'s row of `id`. */
function cursorsOn(page, id) {
  return page.locator(`[data-testid="row"][data-id="${id}"] [data-testid="cursor"]`);
}

test("a presence state shows in the other browser, clears, is refused over 2,048 bytes, and goes with the page", async () => {
  const a = await openDemo(alice.context, server, SPACE, "alice");
  const b = await openDemo(bob.context, server, SPACE, "bob");
  await until("alice live", () => a.evaluate(() => window.arbor.status().state === "live"));
  await until("bob live", () => b.evaluate(() => window.arbor.status().state === "live"));
  const [n1, n2] = await a.evaluate(async (root) => {
    const one = await window.arbor.create(root, "last", { title: "presence one" });
    const two = await window.arbor.create(root, "last", { title: "presence two" });
    return [one, two];
  }, ROOT);
  await until("bob has both nodes", async () => {
    const t = await titles(b);
    return t.includes("presence one") && t.includes("presence two");
  });
  // The demo names its user as soon as it opens.
  await until("bob sees alice's name", async () => (await statesOf(b, "alice")).some((s) => s?.user === "alice"));

  // A state with a focus, set through the API: bob's status has it, his
  // `onPeers` reports it, and his outline draws alice's cursor on the row.
  const seen = b.evaluate(
    (n1) =>
      new Promise((ok, fail) => {
        const timer = setTimeout(() => fail(new Error("onPeers never reported alice's focus")), 30_000);
        const check = (peers) => {
          const p = peers.find((p) => p.sub === "alice" && p.state?.focus === n1);
          if (!p) return;
          clearTimeout(timer);
          stop();
          ok(p);
        };
        const stop = window.arbor.onPeers(check);
        check(window.arbor.peers());
      }),
    n1,
  );
  await a.evaluate((n1) => window.arbor.setPresence({ user: "alice", focus: n1, selection: [n1], data: { colour: "teal" } }), n1);
  const peer = await seen;
  assert.deepEqual(peer.state, { user: "alice", focus: n1, selection: [n1], data: { colour: "teal" } });
  assert.equal(typeof peer.conn, "number");
  assert.deepEqual(await a.evaluate(() => window.arbor.status().presence), { user: "alice", focus: n1, selection: [n1], data: { colour: "teal" } });
  await until("bob's outline shows alice's cursor on the row", async () => (await cursorsOn(b, n1).count()) === 1);
  assert.equal(await cursorsOn(b, n1).getAttribute("data-sub"), "alice");
  assert.equal(await cursorsOn(b, n1).textContent(), "alice");
  assert.equal(await cursorsOn(b, n2).count(), 0);

  // Cleared: bob's status no longer has a state for alice, and the cursor goes.
  await a.evaluate(() => window.arbor.setPresence(null));
  await until("alice's state gone from bob's status", async () => {
    const states = await statesOf(b, "alice");
    return states.length > 0 && states.every((s) => s === null);
  });
  await until("the cursor gone from bob's outline", async () => (await cursorsOn(b, n1).count()) === 0);
  assert.equal(await a.evaluate(() => window.arbor.status().presence), null);

  // Over 2,048 bytes of JSON: refused with a typed error, nothing kept or
  // sent. Exactly 2,048 is fine, and it is what bob sees next.
  await recordPeers(b);
  const base = JSON.stringify({ user: "alice", data: "" }).length;
  const refused = await a.evaluate(
    (pad) => window.arbor.setPresence({ user: "alice", data: "x".repeat(pad) }).then(() => null, (e) => ({ name: e.name, code: e.code, message: e.message })),
    2048 - base + 1,
  );
  assert.equal(refused?.name, "ArborError");
  assert.equal(refused?.code, "presence_too_large");
  assert.match(refused.message, /2048/);
  assert.equal(await a.evaluate(() => window.arbor.status().presence), null);
  await a.evaluate((pad) => window.arbor.setPresence({ user: "alice", data: "y".repeat(pad) }), 2048 - base);
  await until("bob sees the 2,048-byte state", async () => (await statesOf(b, "alice")).some((s) => typeof s?.data === "string" && s.data.startsWith("y")));
  const events = await b.evaluate(() => window.__peerEvents);
  assert.ok(events.length > 0);
  for (const peers of events) {
    for (const p of peers) assert.ok(!(typeof p.state?.data === "string" && p.state.data.startsWith("x")), "the refused state reached bob");
  }
  const accepted = (await statesOf(b, "alice")).find((s) => s?.data);
  assert.equal(JSON.stringify(accepted).length, 2048);
  // A malformed state is refused too.
  const bad = await a.evaluate(() => window.arbor.setPresence({ focus: "not a node id" }).then(() => null, (e) => e.code));
  assert.equal(bad, "bad_presence");

  // The demo sets its own: the cursor on a row, and editing while typing.
  await a.evaluate((n2) => window.outline.focus(n2), n2);
  await until("bob sees alice's cursor on the focused row", async () => (await cursorsOn(b, n2).count()) === 1);
  assert.deepEqual(await statesOf(b, "alice"), [{ user: "alice", focus: n2 }]);
  await a.keyboard.type(" typed");
  await until("bob sees alice typing there", async () => (await statesOf(b, "alice")).some((s) => s?.focus === n2 && s.editing === true));
  await until("the cursor says so", async () => (await cursorsOn(b, n2).getAttribute("class"))?.includes("editing"));

  // The page closes: its connection, and so its state, is gone for bob.
  await a.close();
  await until("bob no longer lists alice's state", async () => (await statesOf(b, "alice")).every((s) => s === null));
  await until("no cursor left on bob's outline", async () => (await b.getByTestId("cursor").count()) === 0);
  await b.close();
});

test("tabs share one presence: a follower's state is sent by the owner, and the next owner sends it again", async () => {
  const first = await openDemo(alice.context, server, SPACE, "alice");
  await until("first tab owns", () => first.evaluate(() => window.arbor.status().role === "owner"));
  const second = await openDemo(alice.context, server, SPACE, "alice");
  assert.equal(await second.evaluate(() => window.arbor.status().role), "follower");
  const b = await openDemo(bob.context, server, SPACE, "bob");
  await until("first live", () => first.evaluate(() => window.arbor.status().state === "live"));
  await until("bob live", () => b.evaluate(() => window.arbor.status().state === "live"));
  const n = await first.evaluate((root) => window.arbor.create(root, "last", { title: "presence tabs" }), ROOT);
  await until("bob has the node", async () => (await titles(b)).includes("presence tabs"));

  // Set in the follower: it goes through the owner's socket.
  const state = { user: "alice (second tab)", focus: n };
  await second.evaluate((s) => window.arbor.setPresence(s), state);
  await until("bob sees the follower's state", async () => (await statesOf(b, "alice")).some((s) => s?.focus === n));
  assert.deepEqual(await second.evaluate(() => window.arbor.status().presence), state);
  await until("the owner tab knows it", async () => JSON.stringify(await first.evaluate(() => window.arbor.status().presence)) === JSON.stringify(state));
  const before = await b.evaluate(() => window.arbor.status().peers.find((p) => p.sub === "alice").conn);

  // The owner closes: its connection ends (bob sees the state go), the
  // follower takes over, reconnects and shows the same state again.
  await first.close();
  await until("the second tab takes over", () => second.evaluate(() => window.arbor.status().role === "owner"), 60_000);
  await until("bob sees the state again, from the new owner's connection", async () => {
    const peers = await b.evaluate(() => window.arbor.status().peers.filter((p) => p.sub === "alice"));
    return peers.some((p) => p.conn !== before && JSON.stringify(p.state) === JSON.stringify(state));
  }, 60_000);
  await until("and draws it", async () => (await cursorsOn(b, n).count()) === 1);
  assert.equal(await cursorsOn(b, n).textContent(), "alice (second tab)");
  await second.close();
  await until("gone with the last tab", async () => (await statesOf(b, "alice")).every((s) => s === null));
  await b.close();
});
