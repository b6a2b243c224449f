// Presence in the demo: this page shows the others who it is, which row its
// cursor is on and whether it is typing there (`Arbor.setPresence`), and
// draws the others' cursors on the outline: a small chip with the user's
// name, in the user's colour, next to each row another connection focuses.
//
// Hooks: `RowFocus.onChange` (the focused row), `Outline.onRowPainted` (a
// row element was drawn) and `Arbor.onPeers` (the others' states).

import type { Arbor, NodeId, Peer, PresenceState } from "../src/arbor.js";
import { TEMP_PREFIX } from "./edit-queue.js";
import type { Outline } from "./outline.js";
import { rowOf } from "./row-element.js";
import { colourFor, h } from "./ui.js";

/** Typing counts as editing until this long after the last keystroke, ms. */
const TYPING_MS = 2000;
/** Focus moving between rows (a blur, then a focus) is sent once, ms. */
const SETTLE_MS = 30;

/** Another user's cursor on a row. */
interface Cursor {
  conn: number;
  sub: string;
  name: string;
  editing: boolean;
}

export class Presence {
  readonly #arbor: Arbor;
  readonly #o: Outline;
  readonly #user: string;
  /** The node this page's cursor is on (a placeholder's id counts once the
   * replica has created it). */
  #focus: NodeId | null = null;
  #editing = false;
  #typingTimer = 0;
  #sendTimer = 0;
  /** The state last given to `setPresence`, as JSON. */
  #sent = "";
  /** The others' cursors by node. */
  #cursors = new Map<NodeId, Cursor[]>();

  constructor(arbor: Arbor, outline: Outline, user: string) {
    this.#arbor = arbor;
    this.#o = outline;
    this.#user = user;
    outline.rowFocus.onChange = (id) => this.#focused(id);
    outline.onRowPainted = (id, el) => this.#decorate(id, el);
    outline.scroller.addEventListener("input", (e) => {
      const id = rowOf(e.target)?.dataset.id;
      if (id && id === outline.rowFocus.focusedId) this.#typing();
    });
    arbor.onPeers((peers) => this.#show(peers));
    this.#show(arbor.peers());
    this.#send();
  }

  /** The others' cursors on `id`'s row (for tests and tooltips). */
  cursorsOn(id: NodeId): Cursor[] {
    return this.#cursors.get(id) ?? [];
  }

  // ---------------------------------------------------------------- own state

  #focused(id: NodeId | null): void {
    // Leaving the window keeps the cursor where it was (the row gets focus
    // back when the window does); leaving the rows inside the page clears it.
    if (id === null && !document.hasFocus()) return;
    if (id !== this.#focus) {
      this.#focus = id;
      this.#editing = false;
      window.clearTimeout(this.#typingTimer);
    }
    this.#schedule();
  }

  #typing(): void {
    window.clearTimeout(this.#typingTimer);
    this.#typingTimer = window.setTimeout(() => {
      this.#editing = false;
      this.#schedule();
    }, TYPING_MS);
    if (this.#editing) return;
    this.#editing = true;
    this.#schedule();
  }

  #schedule(): void {
    window.clearTimeout(this.#sendTimer);
    this.#sendTimer = window.setTimeout(() => this.#send(), SETTLE_MS);
  }

  #send(): void {
    const state: PresenceState = { user: this.#user };
    const focus = this.#focus;
    if (focus !== null && !focus.startsWith(TEMP_PREFIX)) {
      state.focus = focus;
      if (this.#editing) state.editing = true;
    }
    const json = JSON.stringify(state);
    if (json === this.#sent) return;
    this.#sent = json;
    this.#arbor.setPresence(state).catch((e: unknown) => {
      this.#sent = "";
      console.warn("[arbor demo] presence not set:", e);
    });
  }

  // ---------------------------------------------------------------- the others

  #show(peers: Peer[]): void {
    const next = new Map<NodeId, Cursor[]>();
    for (const p of peers) {
      const focus = p.state?.focus;
      if (!focus) continue;
      const name = p.state?.user || p.sub;
      const list = next.get(focus) ?? [];
      // One chip per user and row (the same user in two browsers).
      if (list.some((c) => c.name === name && c.sub === p.sub)) continue;
      list.push({ conn: p.conn, sub: p.sub, name, editing: Boolean(p.state?.editing) });
      next.set(focus, list);
    }
    for (const list of next.values()) list.sort((a, b) => a.name.localeCompare(b.name) || a.conn - b.conn);
    this.#cursors = next;
    for (const el of this.#o.scroller.querySelectorAll<HTMLDivElement>(".row")) {
      const id = el.dataset.id;
      if (id) this.#decorate(id, el);
    }
  }

  /** Brings the cursor chips of row `id` up to date (only if they changed). */
  #decorate(id: NodeId, el: HTMLDivElement): void {
    const cursors = this.#cursors.get(id);
    const key = cursors ? cursors.map((c) => `${c.conn}:${c.name}:${c.editing}`).join("|") : "";
    if ((el.dataset.presence ?? "") === key) return;
    el.querySelector(".cursors")?.remove();
    if (!cursors) {
      delete el.dataset.presence;
      return;
    }
    el.dataset.presence = key;
    const chips = cursors.map((c) => {
      const chip = h(
        "span",
        {
          class: c.editing ? "cursor editing" : "cursor",
          "data-testid": "cursor",
          "data-sub": c.sub,
          "data-conn": String(c.conn),
          title: c.editing ? `${c.name} is typing here` : `${c.name} is here`,
        },
        c.name,
      );
      chip.style.setProperty("--who", colourFor(c.sub));
      return chip;
    });
    const box = h("span", { class: "cursors", "aria-label": `Here: ${cursors.map((c) => c.name).join(", ")}` }, ...chips);
    el.insertBefore(box, el.querySelector(".del"));
  }
}
