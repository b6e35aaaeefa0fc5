import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Structured JSON logs. Authorization-like headers are redacted wherever they appear, so a token that reaches a log
 * call by mistake is still never written.
 */
export function createLogger(name: string, level = process.env.DAMSELFLY_LOG_LEVEL ?? 'info', dest?: pino.DestinationStream): Logger {
  const opts: LoggerOptions = {
    name,
    level,
    redact: {
      paths: ['headers.authorization', 'headers.Authorization', '*.headers.authorization', '*.headers.Authorization', 'headers.cookie', 'token'],
      censor: '[redacted]',
    },
  };
  return dest ? pino(opts, dest) : pino(opts);
}

/** A child logger for a framework (fastify): only warnings and worse, so per-request info lines stay out of the logs. */
export function quietLogger(log: Logger): Logger {
  return log.child({}, { level: log.isLevelEnabled('warn') ? 'warn' : log.level });
}
