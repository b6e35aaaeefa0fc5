import cliProgress from 'cli-progress';

export interface Progress {
  start(total: number): void;
  add(n: number): void;
  stop(): void;
}

const quiet: Progress = { start() {}, add() {}, stop() {} };

/** A progress bar on stderr when it is a terminal; silent otherwise (scripts, CI). */
export function createProgress(enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) return quiet;
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: '{bar} {percentage}% | {value_mb}/{total_mb} MiB | {speed} MiB/s | ETA {eta}s',
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let value = 0;
  let total = 0;
  const t0 = Date.now();
  const payload = () => ({
    value_mb: (value / 2 ** 20).toFixed(1),
    total_mb: (total / 2 ** 20).toFixed(1),
    speed: (value / 2 ** 20 / Math.max(0.001, (Date.now() - t0) / 1000)).toFixed(1),
  });
  return {
    start(t) {
      // Started again (a link answer given up for the bytes): counted from 0.
      value = 0;
      total = t;
      bar.start(t, 0, payload());
    },
    add(n) {
      value += n;
      bar.update(value, payload());
    },
    stop() {
      bar.stop();
    },
  };
}
