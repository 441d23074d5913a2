import type { Command } from './types.js';
import { OK, error } from '../protocol/encoder.js';

const OUT_OF_RANGE = error('ERR', 'DB index is out of range (this server has one database, 0)');

/**
 * SELECT <db>: only database 0, which every connection is already in. Clients
 * configured with a database send it on connect; 0 (or 00, +0) is taken so that
 * those set to it work, any other index is refused as Redis refuses one it does not have.
 */
export const select: Command = {
  name: 'SELECT',
  minArgs: 1,
  maxArgs: 1,
  unlisted: true,
  run(words) {
    return /^[+-]?0+$/.test(words[1]!) ? OK : OUT_OF_RANGE;
  },
};
