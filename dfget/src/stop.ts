/**
 * Why a run may end early: the --timeout deadline, SIGINT, SIGTERM or SIGHUP (the terminal or ssh session went
 * away), or a crash somewhere below. Each aborts one
 * controller with its reason, and the run races that signal, so it ends on time even when a library below ignores
 * the signal, and always through the path that removes the temporary files.
 */
import { dfgetError } from './errors.js';

export interface StopConditions {
  signal: AbortSignal;
  /** Rejects with the abort reason once the signal fires (never resolves). */
  stopped: Promise<never>;
  dispose(): void;
}

export function stopConditions(timeoutMs: number): StopConditions {
  const ac = new AbortController();
  // A plain timer this object holds, not AbortSignal.timeout(): that one's timer can be garbage-collected before it
  // fires when only AbortSignal.any() refers to it (nodejs/node#57736), and then the deadline silently never comes.
  // Counted from the process's start (performance.now() is the time since then): `--timeout S` bounds the whole
  // command, node's start-up and module loading included, which take a good part of a second on a busy machine.
  const timer = timeoutMs > 0 ? setTimeout(() => ac.abort(dfgetError('DFGET_TIMEOUT', String(timeoutMs / 1000))), Math.max(0, timeoutMs - performance.now())) : undefined;
  const onInt = () => ac.abort(dfgetError('DFGET_SIGINT'));
  const onTerm = () => ac.abort(dfgetError('DFGET_SIGTERM'));
  const onHup = () => ac.abort(dfgetError('DFGET_SIGHUP'));
  // A throw in some library callback would otherwise kill the process at once, leaving the temporary file behind.
  const onCrash = (err: unknown) => ac.abort(err);
  // `once`: a second Ctrl-C kills the process the default way, for when the cleanup itself hangs.
  process.once('SIGINT', onInt);
  process.once('SIGTERM', onTerm);
  process.once('SIGHUP', onHup);
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  const stopped = new Promise<never>((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true }));
  stopped.catch(() => {});
  return {
    signal: ac.signal,
    stopped,
    dispose() {
      clearTimeout(timer);
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      process.off('SIGHUP', onHup);
      // The crash handlers stay: a transfer winding down in the background may still throw before the process exits,
      // and must not replace the run's exit code with node's 1 (aborting an ended run does nothing).
    },
  };
}
