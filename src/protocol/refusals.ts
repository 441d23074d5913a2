/**
 * The error replies by which a server says it did nothing with a request and
 * another try may succeed: shared by the server, which sends them, and the
 * client library, which retries on them (a GETSEQ included: no number was issued),
 * or, for a batch too large, asks again for fewer.
 */
import { SHUTTING_DOWN_MESSAGE, STARTING_MESSAGE } from '../core/limits.js';

export { SHUTTING_DOWN_MESSAGE };

/** True for `-ERR` replies that mean "not done, try again" (NOTLEADER has a code of its own). */
export function isRetryRefusal(code: string, message: string): boolean {
  return code === 'ERR' && (message === SHUTTING_DOWN_MESSAGE || message === STARTING_MESSAGE);
}

/** The refusal of a GETSEQ_BATCH count out of range (`raw` as sent, clipped); it names the server's limit. */
export function invalidCountMessage(raw: string, maxBatch: bigint): string {
  return `invalid count '${raw}': expected an integer from 1 to ${maxBatch} (--max-batch)`;
}

/** The server's --max-batch named in an `invalidCountMessage`, or null for any other message. */
export function maxBatchIn(message: string): bigint | null {
  const m = /^invalid count '.*': expected an integer from 1 to (\d{1,20}) \(--max-batch\)$/s.exec(message);
  return m === null ? null : BigInt(m[1]!);
}
