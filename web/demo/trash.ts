// The trash panel: TRASH's children, each with a restore button.

import { type Arbor, type NodeView, TRASH } from "../src/arbor.js";
import type { Outline } from "./outline.js";
import { h, showError } from "./ui.js";

const PAGE = 5000;
/** Rendered at most (the panel is not virtualized). */
const SHOW_MAX = 2000;

export class TrashPanel {
  #arbor: Arbor;
  #outline: Outline;
  #panel: HTMLElement;
  #list: HTMLElement;
  #button: HTMLButtonElement;
  #open = false;
  #items: NodeView[] = [];
  #loading: Promise<void> | null = null;
  #again = false;

  constructor(arbor: Arbor, outline: Outline, panel: HTMLElement, list: HTMLElement, button: HTMLButtonElement) {
    this.#arbor = arbor;
    this.#outline = outline;
    this.#panel = panel;
    this.#list = list;
    this.#button = button;
    button.addEventListener("click", () => this.setOpen(!this.#open));
    list.addEventListener("click", (e) => {
      const t = e.target instanceof Element ? e.target : null;
      const item = t?.closest<HTMLElement>('[data-testid="trash-item"]');
      const id = item?.dataset.id;
      if (!id || !t?.closest('[data-testid="restore"]')) return;
      // Hide it at once; the reload after the restore confirms.
      this.#items = this.#items.filter((v) => v.id !== id);
      this.#render();
      void this.#outline.restore(id).then(() => this.reload());
    });
  }

  get open(): boolean {
    return this.#open;
  }

  setOpen(open: boolean): void {
    this.#open = open;
    this.#panel.hidden = !open;
    this.#button.setAttribute("aria-pressed", String(open));
    this.#button.classList.toggle("on", open);
    if (open) void this.reload();
  }

  /** Reloads TRASH's children if the panel is open (coalescing calls). */
  reload(): Promise<void> {
    if (!this.#open) return Promise.resolve();
    if (this.#loading) {
      this.#again = true;
      return this.#loading;
    }
    this.#loading = (async () => {
      try {
        do {
          this.#again = false;
          try {
            const all: NodeView[] = [];
            let after: string | undefined;
            for (;;) {
              const page = await this.#arbor.children(TRASH, { after, limit: PAGE });
              for (const v of page) all.push(v);
              if (page.length < PAGE) break;
              after = page[page.length - 1].id;
            }
            this.#items = all;
            this.#render();
          } catch (e) {
            if (!this.#again) showError(e, "Could not load the trash");
          }
        } while (this.#again);
      } finally {
        this.#loading = null;
      }
    })();
    return this.#loading;
  }

  #render(): void {
    const items = this.#items;
    this.#panel.dataset.count = String(items.length);
    if (items.length === 0) {
      this.#list.replaceChildren(h("p", { class: "trash-empty" }, "Trash is empty."));
      return;
    }
    // Most recently deleted first is what people look for; TRASH appends.
    const shown = items.slice(-SHOW_MAX).reverse();
    const frag = document.createDocumentFragment();
    for (const v of shown) {
      const title = v.fields.title ?? "";
      frag.append(
        h(
          "div",
          { class: "trash-item", "data-testid": "trash-item", "data-id": v.id },
          h("span", { class: title ? "trash-title" : "trash-title untitled", title: v.id }, title || "Untitled"),
          h("button", { type: "button", class: "restore", "data-testid": "restore", title: "Restore to where it was" }, "Restore"),
        ),
      );
    }
    if (items.length > SHOW_MAX) frag.append(h("p", { class: "trash-empty" }, `…and ${items.length - SHOW_MAX} older items`));
    this.#list.replaceChildren(frag);
  }
}
