import type { Command } from './types.js';
import { PONG, bulk } from '../protocol/encoder.js';

/** PING [message]: +PONG, or the message back as Redis does. */
export const ping: Command = {
  name: 'PING',
  minArgs: 0,
  maxArgs: 1,
  beforeAuth: true,
  run(words) {
    return words.length === 1 ? PONG : bulk(words[1]!);
  },
};
