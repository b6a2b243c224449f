// One row's DOM element: building it (grip, toggle or bullet, title, delete button) and updating it in place.

import type { NodeId } from "../src/arbor.js";

const INDENT = 20;

/** A row's element and what it last showed (so updates touch only what changed). */
export interface RowEls {
  el: HTMLDivElement;
  /** The toggle button or the bullet, whichever the row shows. */
  slot: HTMLElement;
  input: HTMLInputElement;
  y: number;
  depth: number;
  kids: boolean;
  open: boolean;
}

/** What a row element should show. */
export interface RowState {
  /** Its offset from the top of the spacer, in pixels. */
  y: number;
  parent: NodeId;
  depth: number;
  /** Whether it has children (a toggle instead of a bullet). */
  kids: boolean;
  open: boolean;
  title: string;
  /** A title was typed here and not saved yet (a focused input keeps it). */
  typed: boolean;
}

/** The row element an event target is in, if any. */
export function rowOf(target: EventTarget | null): HTMLElement | null {
  return target instanceof Element ? target.closest<HTMLElement>(".row") : null;
}

export function createRowEl(id: NodeId): RowEls {
  const el = document.createElement("div");
  el.className = "row";
  el.dataset.testid = "row";
  el.dataset.id = id;
  el.draggable = true;
  el.setAttribute("role", "treeitem");
  const grip = document.createElement("span");
  grip.className = "grip";
  grip.title = "Drag to move";
  grip.setAttribute("aria-hidden", "true");
  const slot = createBullet();
  const input = document.createElement("input");
  input.type = "text";
  input.className = "title";
  input.dataset.testid = "title";
  input.placeholder = "Untitled";
  input.spellcheck = false;
  input.autocomplete = "off";
  input.setAttribute("aria-label", "Title");
  const del = document.createElement("button");
  del.type = "button";
  del.className = "del";
  del.dataset.testid = "delete";
  del.tabIndex = -1;
  del.title = "Delete (Ctrl+Backspace)";
  del.setAttribute("aria-label", "Delete");
  del.textContent = "×";
  el.append(grip, slot, input, del);
  return { el, slot, input, y: -1, depth: -1, kids: false, open: true };
}

/** Brings a row element up to date with `s`, touching only what changed. */
export function updateRowEl(r: RowEls, s: RowState): void {
  if (r.y !== s.y) {
    r.el.style.transform = `translateY(${s.y}px)`;
    r.y = s.y;
  }
  if (r.el.dataset.parent !== s.parent) r.el.dataset.parent = s.parent;
  if (r.depth !== s.depth) {
    r.el.dataset.depth = String(s.depth);
    r.el.setAttribute("aria-level", String(s.depth + 1));
    r.el.style.setProperty("--indent", `${8 + s.depth * INDENT}px`);
    r.depth = s.depth;
  }
  const { kids, open } = s;
  if (kids !== r.kids) {
    const slot = kids ? createToggle() : createBullet();
    r.slot.replaceWith(slot);
    r.slot = slot;
    r.kids = kids;
    r.open = !open; // force the update below
  }
  if (open !== r.open) {
    r.el.setAttribute("aria-expanded", kids ? String(open) : "false");
    if (kids) {
      r.slot.setAttribute("aria-expanded", String(open));
      r.slot.setAttribute("aria-label", open ? "Collapse" : "Expand");
    }
    r.open = open;
  }
  const title = s.title;
  const input = r.input;
  if (input.value !== title) {
    const focused = document.activeElement === input;
    if (!(focused && s.typed)) {
      const caret = focused ? input.selectionStart : null;
      input.value = title;
      if (focused && caret !== null) {
        const c = Math.min(caret, title.length);
        input.setSelectionRange(c, c);
      }
    }
  }
}

function createToggle(): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "toggle";
  b.dataset.testid = "toggle";
  b.tabIndex = -1;
  b.textContent = "▸";
  return b;
}

function createBullet(): HTMLSpanElement {
  const s = document.createElement("span");
  s.className = "bullet";
  s.setAttribute("aria-hidden", "true");
  return s;
}
