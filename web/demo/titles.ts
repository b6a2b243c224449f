// Title editing: typed titles are shown at once and saved 300 ms after typing stops (or on blur).

import type { NodeId } from "../src/arbor.js";
import { TEMP_PREFIX } from "./edit-queue.js";
import type { Row } from "./model.js";
import type { Outline } from "./outline.js";
import { showError } from "./ui.js";

const SAVE_DELAY = 300;

export class Titles {
  readonly #o: Outline;
  /** Titles typed but not yet confirmed saved. */
  #pending = new Map<NodeId, string>();
  /** The save in flight per node (its value and promise). */
  #saving = new Map<NodeId, { value: string; done: Promise<void> }>();
  #saveTimers = new Map<NodeId, number>();

  constructor(outline: Outline) {
    this.#o = outline;
  }

  /** The title a row shows: what was typed, else the saved one. */
  of(r: Row): string {
    return this.#pending.get(r.id) ?? r.view.fields.title ?? "";
  }

  /** True if a title typed for `id` is not confirmed saved yet. */
  isTyped(id: NodeId): boolean {
    return this.#pending.has(id);
  }

  /** The nodes with a typed title not confirmed saved yet. */
  typedIds(): NodeId[] {
    return [...this.#pending.keys()];
  }

  /** Forgets what was typed into `id` (a placeholder whose create failed). */
  discard(id: NodeId): void {
    this.#pending.delete(id);
  }

  /** The user typed `value` into `id`'s title: saved once typing stops. */
  onInput(id: NodeId, value: string): void {
    this.#pending.set(id, value);
    window.clearTimeout(this.#saveTimers.get(id));
    this.#saveTimers.set(
      id,
      window.setTimeout(() => void this.saveNow(id), SAVE_DELAY),
    );
  }

  /** Saves every title typed but not saved yet. */
  flush(): Promise<void> {
    return Promise.all([...this.#pending.keys()].map((id) => this.saveNow(id))).then(() => undefined);
  }

  /** Saves `id`'s typed title now (never rejects). */
  saveNow(id: NodeId): Promise<void> {
    if (id.startsWith(TEMP_PREFIX)) {
      const real = this.#o.queue.aliasOf(id);
      if (!real) return Promise.resolve(); // saved when the create is confirmed
      id = real;
    }
    const t = this.#saveTimers.get(id);
    if (t !== undefined) {
      window.clearTimeout(t);
      this.#saveTimers.delete(id);
    }
    const value = this.#pending.get(id);
    if (value === undefined) return Promise.resolve();
    const inFlight = this.#saving.get(id);
    if (inFlight?.value === value) return inFlight.done;
    const settle = () => {
      if (this.#pending.get(id) === value) this.#pending.delete(id);
      if (this.#saving.get(id) === entry) this.#saving.delete(id);
    };
    const done = this.#o.arbor.set(id, "title", value).then(
      () => {
        const loc = this.#o.model.where.get(id);
        if (loc) loc.view.fields = { ...loc.view.fields, title: value };
        settle();
      },
      (e: unknown) => {
        settle();
        showError(e, "Could not rename");
        this.#o.viewport.render();
      },
    );
    const entry = { value, done };
    this.#saving.set(id, entry);
    return done;
  }

  /** The placeholder `temp` is now node `id`: what was typed into it is saved. */
  rename(temp: NodeId, id: NodeId): void {
    const timer = this.#saveTimers.get(temp);
    if (timer !== undefined) {
      window.clearTimeout(timer);
      this.#saveTimers.delete(temp);
    }
    const typed = this.#pending.get(temp);
    this.#pending.delete(temp);
    if (typed !== undefined) {
      if (!this.#pending.has(id)) this.#pending.set(id, typed);
      void this.saveNow(id);
    }
  }
}
