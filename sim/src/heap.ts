/** Binary min-heap of events ordered by time, then insertion order (so equal times replay deterministically). */
export interface SimEvent {
  at: number;
  seq: number;
  kind: number;
  ref: number;
  version: number;
}

export class EventHeap {
  readonly #a: SimEvent[] = [];
  #seq = 0;

  get size(): number {
    return this.#a.length;
  }

  push(at: number, kind: number, ref: number, version = 0): void {
    const a = this.#a;
    const e: SimEvent = { at, seq: this.#seq++, kind, ref, version };
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(a[p]!, e)) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = e;
  }

  pop(): SimEvent | undefined {
    const a = this.#a;
    const top = a[0];
    const last = a.pop();
    if (!top || !last || a.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const c = r < a.length && less(a[r]!, a[l]!) ? r : l;
      if (less(last, a[c]!)) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

function less(x: SimEvent, y: SimEvent): boolean {
  return x.at < y.at || (x.at === y.at && x.seq < y.seq);
}
