import type { Command } from './types.js';
import { numberReply, sequenceName } from './sequence-reply.js';
import { parseUnsigned } from '../core/limits.js';
import { clip, error } from '../protocol/encoder.js';
import { invalidCountMessage } from '../protocol/refusals.js';

/** GETSEQ_BATCH <count> [name]: the caller owns first .. first+count-1. */
export const batch: Command = {
  name: 'GETSEQ_BATCH',
  minArgs: 1,
  maxArgs: 2,
  run(words, session, services) {
    const raw = words[1]!;
    // `:100` is accepted because the seed's design note wrote it that way.
    const count = parseUnsigned(raw.charCodeAt(0) === 58 ? raw.slice(1) : raw);
    if (count === undefined || count < 1n || count > services.maxBatch) {
      return error('ERR', invalidCountMessage(clip(raw, 32), services.maxBatch));
    }
    const name = sequenceName(words[2]);
    if (typeof name !== 'string') return name.reply;
    return numberReply(services.source.allocate(name, count, session), session.tls);
  },
};
