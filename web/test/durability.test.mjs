// Write-behind in Chromium: an edit is shown (its change event, carrying the
// node's data) before it is saved (its call resolves), and every edit whose
// call resolved survives a crash of the tab (its renderer killed, worker and
// all), read back from the replica file alone (the edits were made offline:
// the server never had them).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launch, openDemo, startServer, until } from "./harness.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

test("an edit is shown before it is saved, and every saved edit survives a crash of the tab", { timeout: 180_000 }, async () => {
  const browser = await launch();
  try {
    const page = await openDemo(browser.context, server, "demo", "crash");
    // Past its cold start (writes wait for no snapshot), then offline.
    await until("live", () => page.evaluate(() => window.arbor.status().state === "live"));
    const made = await page.evaluate(async () => {
      const arbor = window.arbor;
      await arbor.disconnect();
      const root = "00000000-0000-0000-0000-000000000000";
      // The order the page hears things in: the change event of a create
      // comes while its call is still waiting for the save.
      const heard = [];
      const stop = arbor.subscribe((c) => heard.push({ kind: "change", fields: c.fields, nodes: c.nodes }));
      const id = await arbor.create(root, "last", { title: "shown first" });
      heard.push({ kind: "resolved", id });
      stop();
      const ids = [id];
      for (let i = 0; i < 20; i++) ids.push(await arbor.create(root, "last", { title: `saved ${i}` }));
      await arbor.set(ids[1], "title", "renamed");
      await arbor.move(ids[2], ids[3], "last");
      await arbor.delete(ids[4]);
      await arbor.saved();
      return { heard, ids };
    });
    const changeAt = made.heard.findIndex((h) => h.kind === "change" && h.fields.includes(made.ids[0]));
    const resolvedAt = made.heard.findIndex((h) => h.kind === "resolved");
    assert.ok(changeAt >= 0 && changeAt < resolvedAt, `change event before the call resolved: ${JSON.stringify(made.heard)}`);
    // The event carries what the view needs of the node (no read back).
    const carried = made.heard[changeAt].nodes?.[made.ids[0]];
    assert.equal(carried?.fields.title, "shown first", JSON.stringify(made.heard[changeAt]));
    assert.equal(carried.parent, "00000000-0000-0000-0000-000000000000");
    assert.equal(carried.deleted, false);
    assert.match(carried.key, /^[0-9a-f]+$/);

    // A crash: the renderer (and the dedicated worker in it) dies at once.
    // (`Page.crash` never answers: the page's "crash" event says it died.)
    const crashed = new Promise((ok) => page.once("crash", ok));
    const cdp = await browser.context.newCDPSession(page);
    void cdp.send("Page.crash").catch(() => {});
    await crashed;
    await page.close().catch(() => {});

    // A new tab of the same browser opens the same replica file, offline.
    const again = await openDemo(browser.context, server, "demo", "after");
    await until("the new tab owns the replica", () => again.evaluate(() => window.arbor.status().role === "owner"));
    // (Its replica has a cursor: no snapshot, so reads are never refused
    // as busy; whatever it pushes now it read from the file.)
    const back = await again.evaluate((ids) => Promise.all(ids.map((id) => window.arbor.node(id))), made.ids);
    for (const [i, info] of back.entries()) assert.ok(info, `node ${i} (${made.ids[i]}) survived the crash`);
    assert.equal(back[0].fields.title, "shown first");
    assert.equal(back[1].fields.title, "renamed");
    assert.equal(back[2].parent, made.ids[3]);
    assert.equal(back[4].deleted, true);
    for (let i = 5; i < back.length; i++) assert.equal(back[i].fields.title, `saved ${i - 1}`);
  } finally {
    await browser.close();
  }
});
