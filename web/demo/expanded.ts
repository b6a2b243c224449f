// Which nodes are expanded, remembered per space in localStorage.

import type { NodeId } from "../src/arbor.js";

export class ExpandedSet {
  readonly #storageKey: string;
  readonly #ids: Set<NodeId>;
  #persistTimer = 0;

  constructor(space: string) {
    this.#storageKey = `arbor-demo:expanded:${space}`;
    this.#ids = this.#load();
  }

  has(id: NodeId): boolean {
    return this.#ids.has(id);
  }

  ids(): NodeId[] {
    return [...this.#ids];
  }

  /** Expands `id` (saved a little later); false if it already was. */
  add(id: NodeId): boolean {
    if (this.#ids.has(id)) return false;
    this.#ids.add(id);
    this.#persist();
    return true;
  }

  /** Collapses `id` (saved a little later); false if it already was. */
  delete(id: NodeId): boolean {
    if (!this.#ids.delete(id)) return false;
    this.#persist();
    return true;
  }

  /** The placeholder `temp` is now node `id`. */
  rename(temp: NodeId, id: NodeId): void {
    if (this.#ids.delete(temp)) {
      this.#ids.add(id);
      this.#persist();
    }
  }

  #load(): Set<NodeId> {
    try {
      const raw = localStorage.getItem(this.#storageKey);
      const ids: unknown = raw ? JSON.parse(raw) : [];
      if (Array.isArray(ids)) return new Set(ids.filter((x): x is string => typeof x === "string"));
    } catch {
      // no localStorage (or garbage in it): start collapsed
    }
    return new Set();
  }

  #persist(): void {
    window.clearTimeout(this.#persistTimer);
    this.#persistTimer = window.setTimeout(() => {
      try {
        localStorage.setItem(this.#storageKey, JSON.stringify([...this.#ids]));
      } catch {
        // quota or privacy mode: expanded state stays in memory
      }
    }, 300);
  }
}
