/**
 * Logging: pino JSON lines on stdout. One line at start, on storage failure and
 * recovery, on leadership changes and on shutdown; never one per request.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'dolmeangi' }, timestamp: pino.stdTimeFunctions.isoTime });
}

/** For tests and embedding: a logger that writes nothing. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
