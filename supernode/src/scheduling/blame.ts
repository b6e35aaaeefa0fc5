/**
 * Who blamed whom in one task, and what it adds up to. A report is evidence only when it is about an assignment the
 * scheduler itself made (the scheduler checks that before it gets here), and blame is weighed by who gives it:
 *
 * - a requester that got a corrupt piece (or two failed transfers) from a source never gets that source again;
 * - a source is blacklisted for the whole task on one corrupt report, or `failuresBeforeBlacklist` failures, from
 *   requesters still credible;
 * - a requester that blames more than `MAX_ACCUSED` distinct sources is no longer credible: every blame it gave is
 *   withdrawn (sources it alone condemned are reinstated) and it is itself blacklisted as a source. One liar can cost
 *   honest peers a few pieces' worth of time, not their place in the swarm.
 */

/** Distinct sources one requester may blame in a task before its word stops counting. */
export const MAX_ACCUSED = 4;
/** Failed transfers from one source before that requester stops being sent to it. */
export const PAIR_FAILURES = 2;

interface Tally {
  corrupt: number;
  failures: number;
}

export type Verdict = { blacklist: string; reason: string } | { reinstate: string } | { discredited: string; accused: number };

export class BlameLedger {
  readonly #threshold: number;
  /** source → requester → what that requester reported about it. */
  readonly #against = new Map<string, Map<string, Tally>>();
  /** requester → sources it blamed. */
  readonly #accused = new Map<string, Set<string>>();
  readonly #discredited = new Set<string>();
  /** `requester\0source` pairs that are never matched again. */
  readonly #pairs = new Set<string>();
  /** Sources blacklisted for the task, with why. */
  readonly blacklist = new Map<string, string>();

  constructor(failuresBeforeBlacklist: number) {
    this.#threshold = failuresBeforeBlacklist;
  }

  /** Whether `requester` may be sent to `source`. */
  allowed(requester: string, source: string): boolean {
    return !this.blacklist.has(source) && !this.#pairs.has(`${requester}\0${source}`);
  }

  /** Records one failed transfer reported by `requester` about `source`; returns what changed. */
  report(requester: string, source: string, corrupt: boolean): Verdict[] {
    let byReq = this.#against.get(source);
    if (!byReq) this.#against.set(source, (byReq = new Map()));
    let tally = byReq.get(requester);
    if (!tally) byReq.set(requester, (tally = { corrupt: 0, failures: 0 }));
    if (corrupt) tally.corrupt++;
    else tally.failures++;
    if (corrupt || tally.failures >= PAIR_FAILURES) this.#pairs.add(`${requester}\0${source}`);

    let accused = this.#accused.get(requester);
    if (!accused) this.#accused.set(requester, (accused = new Set()));
    accused.add(source);
    if (this.#discredited.has(requester)) return [];
    if (accused.size > MAX_ACCUSED) return this.#discredit(requester, accused);
    return this.#judge(source);
  }

  /** Forgets a peer that left the task (its blame of others stays: it was given while it was there). */
  forgetSource(peerId: string): void {
    this.#against.delete(peerId);
  }

  #discredit(requester: string, accused: Set<string>): Verdict[] {
    this.#discredited.add(requester);
    const out: Verdict[] = [{ discredited: requester, accused: accused.size }];
    for (const s of accused) out.push(...this.#judge(s));
    if (!this.blacklist.has(requester)) {
      this.blacklist.set(requester, `discredited: blamed ${accused.size} peers`);
      out.push({ blacklist: requester, reason: `blamed ${accused.size} distinct peers` });
    }
    return out;
  }

  /** Re-weighs the credible evidence against `source`. */
  #judge(source: string): Verdict[] {
    let corrupt = 0;
    let failures = 0;
    for (const [req, tally] of this.#against.get(source) ?? []) {
      if (this.#discredited.has(req)) continue;
      corrupt += tally.corrupt;
      failures += tally.failures;
    }
    const reason = corrupt > 0 ? 'served a corrupt piece' : failures >= this.#threshold ? `${failures} failed transfers` : undefined;
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
