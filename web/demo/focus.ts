// Keyboard focus on rows: which row has it, focus asked for before the row exists, keeping it in view.

import type { NodeId } from "../src/arbor.js";
import type { Outline } from "./outline.js";

/** Where the caret goes in a focused title (null: leave it). */
export type Caret = "start" | "end" | number | null;

/** The focused row's index, when it is in view. */
export interface FocusAnchor {
  id: NodeId;
  at: number;
}

export class RowFocus {
  readonly #o: Outline;
  #focusedId: NodeId | null = null;
  /** Called when `focusedId` changes (presence.ts follows it). */
  onChange: ((id: NodeId | null) => void) | null = null;
  #pending: { id: NodeId; caret: Caret; until: number } | null = null;

  constructor(outline: Outline) {
    this.#o = outline;
  }

  /** The row whose title has focus (it stays rendered wherever it is). */
  get focusedId(): NodeId | null {
    return this.#focusedId;
  }

  set focusedId(id: NodeId | null) {
    if (id === this.#focusedId) return;
    this.#focusedId = id;
    this.onChange?.(id);
  }

  /** Asks for focus on `id`'s title; it happens as soon as the row is in
   * `rows` (within 5 s), at the latest after the next rebuild. */
  want(id: NodeId, caret: Caret): void {
    this.#pending = { id, caret, until: Date.now() + 5000 };
  }

  /** Scrolls the row into view and focuses its title (now, if it is there). */
  focus(id: NodeId, caret: Caret): void {
    this.want(id, caret);
    this.fulfil();
  }

  /** Gives focus asked for with `want` if its row is there now. */
  fulfil(): void {
    const want = this.#pending;
    if (!want) return;
    if (Date.now() > want.until) {
      this.#pending = null;
      return;
    }
    const { model, viewport } = this.#o;
    const i = model.pos(want.id);
    if (i === undefined) return; // not there yet: try again after the next rebuild
    this.#pending = null;
    viewport.scrollIntoView(i);
    this.focusedId = want.id; // keeps the row rendered even if scrolling lags
    viewport.render();
    const r = viewport.element(want.id);
    if (!r) return;
    const input = r.input;
    if (document.activeElement !== input) input.focus({ preventScroll: true });
    const len = input.value.length;
    if (want.caret === "start") input.setSelectionRange(0, 0);
    else if (want.caret === "end") input.setSelectionRange(len, len);
    else if (typeof want.caret === "number") {
      const c = Math.min(want.caret, len);
      input.setSelectionRange(c, c);
    }
  }

  /** The focused row, if it is in the viewport (so it can stay there). */
  anchor(): FocusAnchor | null {
    const fid = this.focusedId;
    const at = fid === null ? undefined : this.#o.model.pos(fid);
    if (fid === null || at === undefined) return null;
    return this.#o.viewport.isInView(at) ? { id: fid, at } : null;
  }

  /** Keeps the anchor's row in view if rows above it came or went. */
  follow(anchor: FocusAnchor | null): void {
    if (!anchor) return;
    const at = this.#o.model.pos(anchor.id);
    if (at !== undefined && at !== anchor.at) this.#o.viewport.scrollIntoView(at);
  }

  /** The placeholder `temp` is now node `id`. */
  rename(temp: NodeId, id: NodeId): void {
    if (this.focusedId === temp) this.focusedId = id;
    if (this.#pending?.id === temp) this.#pending.id = id;
  }
}
