// The sync status in the header: state and outbox, peers, cold-start progress, the storage warning.

import type { Status, SyncState } from "../src/arbor.js";
import { byTestId, colourFor, h, initials } from "./ui.js";

const STATE_LABEL: Record<SyncState, string> = {
  offline: "offline",
  connecting: "connecting",
  cold_start: "cold start",
  catching_up: "catching up",
  pushing: "pushing",
  live: "live",
  refused: "refused",
};

export class SyncStatus {
  readonly #user: string;
  readonly #statusEl = byTestId("status");
  readonly #peersEl = byTestId("peers");
  readonly #warningEl = byTestId("storage-warning");
  readonly #rootTrashEl = byTestId("root-trash-warning");
  readonly #progressWrap = byTestId("progress-wrap");
  readonly #progressEl = byTestId<HTMLProgressElement>("progress");
  readonly #progressText = byTestId("progress-text");

  /** `user` is this page's user (their peer chip is marked "me"). */
  constructor(user: string) {
    this.#user = user;
  }

  /** Shows `s`. */
  render(s: Status): void {
    const statusEl = this.#statusEl;
    statusEl.dataset.state = s.state;
    statusEl.dataset.outbox = String(s.outbox);
    let text = STATE_LABEL[s.state] ?? s.state;
    if (s.outbox > 0) text += ` · ${s.outbox} pending`;
    if (s.rejected > 0) text += ` · ${s.rejected} rejected`;
    statusEl.textContent = text;
    const where = s.role === "owner" ? "this tab holds the replica" : "replica shared with another tab";
    statusEl.title = [`${s.storage === "opfs" ? "OPFS" : "in memory"}, ${where}`, `cursor ${s.cursor ?? "none"}`, s.error ? `last error: ${s.error}` : ""]
      .filter(Boolean)
      .join("\n");

    this.#warningEl.hidden = s.storage !== "memory";
    this.#rootTrashEl.hidden = !s.rootInTrash;

    const cold = s.state === "cold_start";
    this.#progressWrap.hidden = !cold;
    if (cold) {
      const p = s.progress;
      if (p && p.total > 0) {
        this.#progressEl.max = p.total;
        this.#progressEl.value = Math.min(p.rows, p.total);
        const pct = Math.floor((100 * Math.min(p.rows, p.total)) / p.total);
        this.#progressText.textContent = `Loading the thoughtspace: ${p.rows.toLocaleString()} of ${p.total.toLocaleString()} rows (${pct}%, ${formatBytes(p.bytes)})`;
      } else {
        this.#progressEl.removeAttribute("value"); // indeterminate
        this.#progressText.textContent = p ? `Loading the thoughtspace: ${p.rows.toLocaleString()} rows (${formatBytes(p.bytes)})` : "Loading the thoughtspace…";
      }
    }

    this.#renderPeers(s);
  }

  #renderPeers(s: Status): void {
    const peersEl = this.#peersEl;
    const user = this.#user;
    // `peers` leaves this browser's own connection out: add this user
    // while connected.
    const connected = s.state === "catching_up" || s.state === "pushing" || s.state === "live";
    const subs = [...new Set([...s.peers.map((p) => p.sub), ...(connected ? [user] : [])])].sort();
    peersEl.dataset.count = String(subs.length);
    peersEl.title = subs.length === 0 ? "Nobody connected" : `Connected: ${subs.join(", ")}`;
    const key = subs.join("\n");
    if (peersEl.dataset.key === key) return;
    peersEl.dataset.key = key;
    peersEl.replaceChildren(
      ...subs.map((sub) => {
        const chip = h("span", { class: sub === user ? "peer me" : "peer", "data-testid": "peer", "data-sub": sub, title: sub === user ? `${sub} (you)` : sub }, initials(sub));
        chip.style.background = colourFor(sub);
        return chip;
      }),
    );
  }
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
