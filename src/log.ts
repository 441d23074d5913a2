/**
 * Logging: pino JSON lines on stdout. One line at start, on storage failure and
 * recovery, on leadership changes and on shutdown; never one per request.
 */
import { writeSync } from 'node:fs';
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  // Written synchronously, a line at a time (there are few). pino's default, asynchronous
  // destination turns a failed write (a full disk, EIO) into an uncaught error, and at
  // exit flushes what is left in a loop that retries a failing write forever: a server
  // whose stdout fails would stop answering and ignore SIGTERM. Like Redis's log, a
  // stdout that stops being read holds the server until it is read again.
  const destination = pino.destination({ dest: 1, sync: true });
  let noted = false;
  destination.on('error', (err: NodeJS.ErrnoException) => {
    // Lines are lost while stdout fails; writing resumes when it works again (or, after
    // EPIPE, pino stops writing: nobody reads any more). The server goes on serving.
    if (noted) return;
    noted = true;
    try {
      const lost = err.code === 'EPIPE' ? 'nobody reads it any more, so nothing more is logged' : 'log lines are lost until it can be written again';
      writeSync(2, `dolmeangi: cannot write the log to standard output (${err.code ?? err.message}); serving on, and ${lost}\n`);
    } catch {
      // stderr may be the same broken file: there is nowhere left to say it.
    }
  });
  return pino({ level, base: { service: 'dolmeangi' }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** For tests and embedding: a logger that writes nothing. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
