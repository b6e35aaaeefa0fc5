/** A Set that can also be read by position in O(1) (swap-remove on delete), so a policy can start anywhere in it. */
export class IndexedSet<T> extends Set<T> {
  #items: T[] = [];
  #index = new Map<T, number>();

  /** Starts empty (Set's iterable argument would call add() before the index exists). */
  constructor() {
    super();
  }

  override add(value: T): this {
    if (!this.#index.has(value)) {
      this.#index.set(value, this.#items.length);
      this.#items.push(value);
    }
    return super.add(value);
  }

  override delete(value: T): boolean {
    const i = this.#index.get(value);
    if (i === undefined) return false;
    const last = this.#items.pop()!;
    if (last !== value) {
      this.#items[i] = last;
      this.#index.set(last, i);
    }
    this.#index.delete(value);
    return super.delete(value);
  }

  override clear(): void {
    this.#items = [];
    this.#index.clear();
    super.clear();
  }

  at(i: number): T | undefined {
    return this.#items[i];
  }
}
