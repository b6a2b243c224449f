// Undo and redo: which edits make one step, and Ctrl+Z / Ctrl+Shift+Z / Ctrl+Y.
//
// The replica keeps the steps (`Arbor.beginStep` / `endStep`, `undo`,
// `redo`); this file decides what one user action is:
//
// - a structural edit (indent, outdent, a drag and drop, a delete, a
//   restore) is one step;
// - a create is one step with the title typed into the new row: the step
//   opens before the create and closes when the row's editing ends (the
//   focus leaves the row, another action, an undo or redo);
// - typing into an existing row's title is one step per editing session,
//   in the same way.
//
// The step calls go through the edit queue, so the worker sees begin, the
// edits and end in that order (a title save is sent straight to the worker,
// and an open step closes only after its row's typed title is saved).

import type { NodeId, UndoReport } from "../src/arbor.js";
import type { Outline } from "./outline.js";
import { showNotice } from "./ui.js";

export class UndoSteps {
  readonly #o: Outline;
  /** The row whose editing session holds the open step (a placeholder id
   * until the create is confirmed), or null. */
  #open: NodeId | null = null;

  constructor(outline: Outline) {
    this.#o = outline;
    // Capture: the title inputs' own undo must not run.
    document.addEventListener("keydown", (e) => this.#onKey(e), true);
  }

  /** The row whose editing session holds the open step, if any. */
  get openFor(): NodeId | null {
    return this.#open === null ? null : this.#o.queue.real(this.#open);
  }

  /** Opens a step for `id`'s editing session (a create, or typing into its
   * title), closing any other one first. */
  beginFor(id: NodeId): void {
    const { queue, arbor } = this.#o;
    if (this.#open !== null && queue.real(this.#open) === queue.real(id)) return;
    void this.close();
    this.#open = id;
    void queue.enqueue("Could not start an undo step", () => arbor.beginStep());
  }

  /** Closes the step of `id`'s editing session, if it holds the open one. */
  endFor(id: NodeId): void {
    if (this.#open !== null && this.#o.queue.real(this.#open) === this.#o.queue.real(id)) void this.close();
  }

  /** Closes the open step, after saving what was typed into its row. */
  close(): Promise<void> {
    const id = this.#open;
    if (id === null) return Promise.resolve();
    this.#open = null;
    const { queue, titles, arbor } = this.#o;
    return queue
      .enqueue("Could not end an undo step", async () => {
        await titles.saveNow(queue.real(id));
        await arbor.endStep();
      })
      .then(() => undefined);
  }

  /** Runs a user action made of structural edits as one step. */
  action<T>(f: () => Promise<T>): Promise<T> {
    const { queue, arbor } = this.#o;
    void this.close();
    void queue.enqueue("Could not start an undo step", () => arbor.beginStep());
    const done = f();
    void queue.enqueue("Could not end an undo step", () => arbor.endStep());
    return done;
  }

  /** Undoes (or redoes) the last step, after the edits queued before it;
   * resolves to the replica's report (undefined if it failed). */
  async undo(redo = false): Promise<UndoReport | null | undefined> {
    const { queue, arbor, titles } = this.#o;
    await titles.flush();
    void this.close();
    const report = await queue.enqueue(redo ? "Could not redo" : "Could not undo", () => (redo ? arbor.redo() : arbor.undo()));
    if (report === null) showNotice(redo ? "Nothing to redo" : "Nothing to undo");
    else if (report && report.kept.length > 0) showNotice(describeKept(report, redo));
    return report;
  }

  #onKey(e: KeyboardEvent): void {
    if (e.defaultPrevented || e.isComposing || e.altKey || !(e.ctrlKey || e.metaKey)) return;
    const key = e.key.toLowerCase();
    const redo = (key === "z" && e.shiftKey) || (key === "y" && !e.shiftKey);
    const undo = key === "z" && !e.shiftKey;
    if (!undo && !redo) return;
    // Text fields other than row titles keep their own undo.
    const t = e.target;
    if (t instanceof HTMLInputElement && !t.classList.contains("title")) return;
    if (t instanceof HTMLTextAreaElement) return;
    e.preventDefault();
    void this.undo(redo);
  }
}

/** What an undo left as others made it, in a sentence. */
function describeKept(r: UndoReport, redo: boolean): string {
  const moved = r.kept.filter((k) => k.kind === "moved_since").length;
  const fields = r.kept.filter((k) => k.kind === "overwritten").length;
  const stuck = r.kept.length - moved - fields;
  const parts: string[] = [];
  if (moved > 0) parts.push(`${moved} node${moved === 1 ? " was" : "s were"} moved by someone else since`);
  if (fields > 0) parts.push(`${fields} field${fields === 1 ? " was" : "s were"} changed by someone else since`);
  if (stuck > 0) parts.push(`${stuck} node${stuck === 1 ? "" : "s"} could not go back (parent gone or below it)`);
  return `${redo ? "Redone" : "Undone"}, except: ${parts.join("; ")}; left as they are`;
}
