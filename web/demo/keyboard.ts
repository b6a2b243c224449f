// Keyboard commands: Enter, Tab, Shift+Tab, arrows, Delete, Ctrl+Backspace and Escape in a title
// (Shift+arrows extend the selection; Delete and Ctrl+Backspace on a
// selected row delete every selected row). Undo and redo keys: undo.ts.

import type { Outline } from "./outline.js";
import { rowOf } from "./row-element.js";

/** Listens for the outline's keyboard commands. */
export function wireKeyboard(o: Outline, scroller: HTMLElement): void {
  scroller.addEventListener("keydown", (e) => onTitleKey(o, e));

  // Arrow keys with nothing focused enter the outline at the top (or bottom) of the view.
  document.addEventListener("keydown", (e) => {
    const rows = o.model.rows;
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.target !== document.body && e.target !== scroller) return;
    if ((e.key !== "ArrowDown" && e.key !== "ArrowUp") || rows.length === 0) return;
    e.preventDefault();
    const i = e.key === "ArrowDown" ? o.viewport.firstVisible() : o.viewport.lastVisible();
    o.focus(rows[Math.max(0, Math.min(rows.length - 1, i))].id);
  });
}

/** A key pressed in a row's title. */
function onTitleKey(o: Outline, e: KeyboardEvent): void {
  const input = e.target;
  if (!(input instanceof HTMLInputElement) || !input.classList.contains("title")) return;
  if (e.isComposing) return;
  const id = rowOf(input)?.dataset.id;
  if (!id) return;
  const mod = e.ctrlKey || e.metaKey;
  switch (e.key) {
    case "Enter":
      e.preventDefault();
      void o.titles.saveNow(id);
      void o.edits.createAfter(id);
      break;
    case "Tab":
      e.preventDefault();
      void (e.shiftKey ? o.edits.outdent(id) : o.edits.indent(id));
      break;
    case "ArrowUp":
    case "ArrowDown": {
      if (e.altKey) return;
      if (e.shiftKey) {
        if (mod) return;
        // Extend the selection to the next row up or down.
        e.preventDefault();
        const i = o.model.pos(id);
        const rows = o.model.rows;
        const j = i === undefined ? -1 : i + (e.key === "ArrowDown" ? 1 : -1);
        if (j < 0 || j >= rows.length) break;
        o.selection.extendTo(rows[j].id);
        o.focus(rows[j].id, input.selectionStart ?? "end");
        break;
      }
      e.preventDefault();
      const down = e.key === "ArrowDown";
      if (mod) {
        o.setExpanded(id, down);
        break;
      }
      const i = o.model.pos(id);
      if (i === undefined) break;
      const rows = o.model.rows;
      const j = i + (down ? 1 : -1);
      if (j < 0 || j >= rows.length) break;
      o.focus(rows[j].id, input.selectionStart ?? "end");
      break;
    }
    case "Backspace":
      if (!mod) return;
      e.preventDefault();
      removeRowOrSelection(o, id);
      break;
    case "Delete":
      // Delete removes the node unless text is selected (then it deletes the text).
      if (input.selectionStart !== input.selectionEnd) return;
      e.preventDefault();
      removeRowOrSelection(o, id);
      break;
    case "Escape":
      if (o.selection.size > 0) o.selection.clear();
      else input.blur();
      break;
  }
}

/** Deletes the selected rows if `id` is one of several selected, else `id`. */
function removeRowOrSelection(o: Outline, id: string): void {
  if (o.selection.size > 1 && o.selection.has(id)) {
    const ids = o.selection.ids();
    o.selection.clear();
    void o.edits.removeMany(ids);
  } else {
    void o.edits.remove(id, true);
  }
}
