/** Per-session request budget: a token bucket (bursts of twice the rate), so one peer cannot flood the supernode. */
export class RequestBudget {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;
  constructor(ratePerSecond: number, now = Date.now()) {
    this.#rate = ratePerSecond;
    this.#burst = ratePerSecond * 2;
    this.#tokens = this.#burst;
    this.#at = now;
  }
  take(now = Date.now()): boolean {
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) / 1000) * this.#rate);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
