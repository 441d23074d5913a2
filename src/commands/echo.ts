import type { Command } from './types.js';
import { bulk } from '../protocol/encoder.js';

/** ECHO <message>: the message back, as Redis does (`redis-cli --pipe` ends its input with one and waits for it). */
export const echo: Command = {
  name: 'ECHO',
  minArgs: 1,
  maxArgs: 1,
  unlisted: true,
  run(words) {
    return bulk(words[1]!);
  },
};
