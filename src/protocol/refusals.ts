/**
 * The error replies by which a server says it did nothing with a request and
 * another try may succeed: shared by the server, which sends them, and the
 * client library, which retries on them (a GETSEQ included: no number was issued).
 */
export const SHUTTING_DOWN_MESSAGE = 'server is shutting down; retry on another server';
export const STARTING_MESSAGE = 'server is starting; retry shortly';

/** True for `-ERR` replies that mean "not done, try again" (NOTLEADER has a code of its own). */
export function isRetryRefusal(code: string, message: string): boolean {
  return code === 'ERR' && (message === SHUTTING_DOWN_MESSAGE || message === STARTING_MESSAGE);
}
