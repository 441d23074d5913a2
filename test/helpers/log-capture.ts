/** A logger that keeps every line it writes, parsed, for tests that check what was logged. */
import pino from 'pino';
import type { Logger } from '../../src/log.js';

export interface CapturedLog {
  readonly log: Logger;
  readonly lines: Array<Record<string, unknown>>;
  /** The `msg` of every line so far. */
  messages(): string[];
}

export function captureLog(level = 'info'): CapturedLog {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines, messages: () => lines.map((l) => String(l.msg)) };
}
