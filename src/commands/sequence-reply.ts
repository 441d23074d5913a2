/** Turns what the sequence core returns into wire replies. */
import { SequenceError } from '../core/sequencer.js';
import { clip, error, integer, utf8Bytes } from '../protocol/encoder.js';
import { isValidName, DEFAULT_SEQUENCE, NAME_RULE } from '../core/limits.js';
import type { Reply } from './types.js';

/** Refusals already encoded: a follower, or a failing store, gives the same one to every request. */
const encoded = new WeakMap<SequenceError, string>();

function refusal(err: SequenceError): string {
  let text = encoded.get(err);
  // The message is the server's own text: a storage failure names a path.
  if (text === undefined) encoded.set(err, (text = error(err.code, utf8Bytes(err.message))));
  return text;
}

const onError = (err: unknown): string =>
  err instanceof SequenceError ? refusal(err) : error('ERR', utf8Bytes(`internal error: ${String((err as Error)?.message ?? err)}`));
const onErrorOnTlsPort = (err: unknown): string => onError(err instanceof SequenceError ? err.onTlsPort : err);

/** `tls`: the request came in on the TLS port, where a refusal may read otherwise (SequenceError.onTlsPort). */
export function numberReply(r: bigint | SequenceError | Promise<bigint>, tls: boolean): Reply {
  if (typeof r === 'bigint') return integer(r);
  if (r instanceof SequenceError) return refusal(tls ? r.onTlsPort : r);
  return r.then(integer, tls ? onErrorOnTlsPort : onError);
}

/** The sequence name argument, or an error reply when it breaks the naming rule. */
export function sequenceName(arg: string | undefined): string | { reply: string } {
  if (arg === undefined) return DEFAULT_SEQUENCE;
  if (isValidName(arg)) return arg;
  return { reply: error('ERR', `invalid sequence name '${clip(arg, 64)}': use ${NAME_RULE}`) };
}
