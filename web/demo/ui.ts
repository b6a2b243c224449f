// Small DOM helpers shared by the demo's modules: the error toast, a
// frame scheduler that also runs in background tabs, peer chips.

import { ArborError } from "../src/arbor.js";

/** Creates an element with attributes and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...kids: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else el.setAttribute(k, v);
  }
  el.append(...kids);
  return el;
}

/** Looks up a required element by its data-testid. */
export function byTestId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.querySelector<T>(`[data-testid="${id}"]`);
  if (!el) throw new Error(`demo page: missing [data-testid="${id}"]`);
  return el;
}

/** A readable one-line description of any thrown value. */
export function describe(e: unknown): string {
  if (e instanceof ArborError) return `${e.message} (${e.code})`;
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

let toastTimer = 0;

/** Shows an error in the toast (data-testid="error") for a few seconds. */
export function showError(e: unknown, context?: string): void {
  console.error(`[arbor demo] ${context ?? "error"}:`, e);
  const el = document.querySelector<HTMLElement>('[data-testid="error"]');
  if (!el) return;
  el.textContent = context ? `${context}: ${describe(e)}` : describe(e);
  el.classList.remove("notice");
  el.hidden = false;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => {
    el.hidden = true;
  }, 8000);
}

/** Shows a message that is not an error in the toast for a few seconds. */
export function showNotice(text: string): void {
  const el = document.querySelector<HTMLElement>('[data-testid="error"]');
  if (!el) return;
  el.textContent = text;
  el.classList.add("notice");
  el.hidden = false;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => {
    el.hidden = true;
  }, 5000);
}

/** Runs `fn` once on the next animation frame, or after 50 ms if frames are
 * not being produced (a hidden tab), whichever comes first. */
export function onNextFrame(fn: () => void): void {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    fn();
  };
  requestAnimationFrame(run);
  window.setTimeout(run, 50);
}

/** Up to two initials for a user name ("alice" -> "AL", "bob-smith" -> "BS"). */
export function initials(sub: string): string {
  const parts = sub.split(/[^\p{L}\p{N}]+/u).filter(Boolean);
  if (parts.length === 0) return "?";
  if (parts.length === 1) return parts[0].slice(0, 2).toUpperCase();
  return (parts[0][0] + parts[1][0]).toUpperCase();
}

/** A stable, pleasant colour for a user name. */
export function colourFor(sub: string): string {
  let hash = 0;
  for (let i = 0; i < sub.length; i++) hash = (hash * 31 + sub.charCodeAt(i)) | 0;
  const hue = ((hash % 360) + 360) % 360;
  return `hsl(${hue} 62% 46%)`;
}
