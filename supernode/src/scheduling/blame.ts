/**
 * Who blamed whom in one task, and what it adds up to. A report is evidence only when it is about an assignment the
 * scheduler itself made (the scheduler checks that before it gets here), and blame is weighed by what others saw:
 *
 * - a source is *vouched for* once a requester reported a verified piece from it (its bytes matched the supernode's
 *   hash, which a liar cannot fake for a source it never fetched from);
 * - a requester that got a corrupt piece (or two failed transfers) from a source is never sent to it again;
 * - a source nobody vouched for is blacklisted for the task on one corrupt report (or `failuresBeforeBlacklist`
 *   failures); one that others vouched for needs blame from two requesters, since one might be lying;
 * - a requester whose blame others contradict (it blames sources they vouched for) more than `MAX_CONTESTED` times
 *   loses its credibility: its blame is withdrawn (sources it alone condemned are reinstated) and it is blacklisted as
 *   a source itself. Blaming many sources nobody vouched for (a swarm of garbage peers) costs an honest peer nothing.
 */

/** Blames against sources other requesters vouched for, before the blamer is no longer believed. */
export const MAX_CONTESTED = 2;
/** Failed transfers from one source before that requester stops being sent to it. */
export const PAIR_FAILURES = 2;

interface Tally {
  corrupt: number;
  failures: number;
}

export type Verdict = { blacklist: string; reason: string } | { reinstate: string } | { discredited: string; contested: number };

export class BlameLedger {
  readonly #threshold: number;
  /** source → requester → what that requester reported about it. */
  readonly #against = new Map<string, Map<string, Tally>>();
  /** source → requesters that got a verified piece from it. */
  readonly #vouchers = new Map<string, Set<string>>();
  /** requester → vouched-for sources it blamed anyway. */
  readonly #contested = new Map<string, Set<string>>();
  readonly #discredited = new Set<string>();
  /** requester → sources it is never matched with again (by requester: `allowed` runs per candidate, no key strings). */
  readonly #pairs = new Map<string, Set<string>>();
  /** Sources blacklisted for the task, with why. */
  readonly blacklist = new Map<string, string>();

  constructor(failuresBeforeBlacklist: number) {
    this.#threshold = failuresBeforeBlacklist;
  }

  /** Whether `requester` may be sent to `source`. */
  allowed(requester: string, source: string): boolean {
    return !this.blacklist.has(source) && !this.#pairs.get(requester)?.has(source);
  }

  /** `requester` verified a piece from `source`. */
  vouch(requester: string, source: string): void {
    let set = this.#vouchers.get(source);
    if (!set) this.#vouchers.set(source, (set = new Set()));
    set.add(requester);
  }

  /** Records one failed transfer reported by `requester` about `source`; returns what changed. */
  report(requester: string, source: string, corrupt: boolean): Verdict[] {
    let byReq = this.#against.get(source);
    if (!byReq) this.#against.set(source, (byReq = new Map()));
    let tally = byReq.get(requester);
    if (!tally) byReq.set(requester, (tally = { corrupt: 0, failures: 0 }));
    if (corrupt) tally.corrupt++;
    else tally.failures++;
    if (corrupt || tally.failures >= PAIR_FAILURES) {
      let set = this.#pairs.get(requester);
      if (!set) this.#pairs.set(requester, (set = new Set()));
      set.add(source);
    }
    if (this.#discredited.has(requester)) return [];
    if (this.#vouchedByOthers(source, requester)) {
      let contested = this.#contested.get(requester);
      if (!contested) this.#contested.set(requester, (contested = new Set()));
      contested.add(source);
      if (contested.size > MAX_CONTESTED) return this.#discredit(requester, contested.size);
    }
    return this.#judge(source);
  }

  /** Forgets a peer that left the task (its blame of others stays: it was given while it was there). */
  forgetSource(peerId: string): void {
    this.#against.delete(peerId);
    this.#vouchers.delete(peerId);
  }

  #vouchedByOthers(source: string, requester: string): boolean {
    for (const v of this.#vouchers.get(source) ?? []) if (v !== requester && !this.#discredited.has(v)) return true;
    return false;
  }

  #discredit(requester: string, contested: number): Verdict[] {
    this.#discredited.add(requester);
    const out: Verdict[] = [{ discredited: requester, contested }];
    for (const [source, byReq] of this.#against) if (byReq.has(requester)) out.push(...this.#judge(source));
    if (!this.blacklist.has(requester)) {
      const reason = `discredited: blamed ${contested} peers others had verified`;
      this.blacklist.set(requester, reason);
      out.push({ blacklist: requester, reason });
    }
    return out;
  }

  /** Re-weighs the credible evidence against `source`. */
  #judge(source: string): Verdict[] {
    let corruptBlamers = 0;
    let failureBlamers = 0;
    let failures = 0;
    for (const [req, tally] of this.#against.get(source) ?? []) {
      if (this.#discredited.has(req)) continue;
      if (tally.corrupt > 0) corruptBlamers++;
      if (tally.failures > 0) failureBlamers++;
      failures += tally.failures;
    }
    // A source others vouched for is condemned only on the word of two requesters.
    const needed = this.#vouchers.get(source)?.size ? 2 : 1;
    const reason =
      corruptBlamers >= needed ? 'served a corrupt piece' : failures >= this.#threshold && failureBlamers >= needed ? `${failures} failed transfers` : undefined;
    const listed = this.blacklist.get(source);
    if (reason && !listed) {
      this.blacklist.set(source, reason);
      return [{ blacklist: source, reason }];
    }
    // Blacklistings that rested on a discredited requester's word are undone (never one for its own discredit).
    if (!reason && listed && !listed.startsWith('discredited')) {
      this.blacklist.delete(source);
      return [{ reinstate: source }];
    }
    return [];
  }
}
