/** Turns what the sequence core returns into wire replies. */
import { SequenceError } from '../core/sequencer.js';
import { clip, error, integer, utf8Bytes } from '../protocol/encoder.js';
import { isValidName, DEFAULT_SEQUENCE, NAME_RULE } from '../core/limits.js';
import type { Reply } from './types.js';

/** Refusals already encoded: a follower, or a failing store, gives the same one to every request. */
const encoded = new WeakMap<SequenceError, string>();
const encodedForTls = new WeakMap<SequenceError, string>();

/**
 * On the TLS port, NOTLEADER names the leader's TLS address: its plain one
 * would take a TLS client nowhere (bare when it is not known).
 */
function refusal(err: SequenceError, tls: boolean): string {
  const forTls = tls && err.code === 'NOTLEADER';
  const cache = forTls ? encodedForTls : encoded;
  let text = cache.get(err);
  // The message is the server's own text: a storage failure names a path.
  if (text === undefined) cache.set(err, (text = error(err.code, utf8Bytes(forTls ? err.tlsLeaderAddress : err.message))));
  return text;
}

const onError = (err: unknown, tls: boolean): string =>
  err instanceof SequenceError ? refusal(err, tls) : error('ERR', utf8Bytes(`internal error: ${String((err as Error)?.message ?? err)}`));
const onErrorPlain = (err: unknown): string => onError(err, false);
const onErrorTls = (err: unknown): string => onError(err, true);

/** `tls`: the request came in on the TLS port. */
export function numberReply(r: bigint | SequenceError | Promise<bigint>, tls: boolean): Reply {
  if (typeof r === 'bigint') return integer(r);
  if (r instanceof SequenceError) return refusal(r, tls);
  return r.then(integer, tls ? onErrorTls : onErrorPlain);
}

/** The sequence name argument, or an error reply when it breaks the naming rule. */
export function sequenceName(arg: string | undefined): string | { reply: string } {
  if (arg === undefined) return DEFAULT_SEQUENCE;
  if (isValidName(arg)) return arg;
  return { reply: error('ERR', `invalid sequence name '${clip(arg, 64)}': use ${NAME_RULE}`) };
}
