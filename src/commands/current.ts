import type { Command } from './types.js';
import { numberReply, sequenceName } from './sequence-reply.js';

export const current: Command = {
  name: 'CURRENT',
  minArgs: 0,
  maxArgs: 1,
  run(words, session, services) {
    const name = sequenceName(words[1]);
    if (typeof name !== 'string') return name.reply;
    return numberReply(services.source.current(name, session), session.tls);
  },
};
