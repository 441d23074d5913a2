import type { Command } from './types.js';
import { OK, error } from '../protocol/encoder.js';

const OUT_OF_RANGE = error('ERR', 'DB index is out of range (this server has one database, 0)');
const NOT_AN_INTEGER = error('ERR', 'value is not an integer or out of range');

/**
 * SELECT <db>: only database 0, which every connection is already in. Clients
 * configured with a database send it on connect: those set to 0 work, any other
 * index is refused as Redis refuses one it does not have.
 */
export const select: Command = {
  name: 'SELECT',
  minArgs: 1,
  maxArgs: 1,
  unlisted: true,
  run(words) {
    const db = words[1]!;
    if (db === '0') return OK;
    return /^-?[1-9][0-9]{0,18}$/.test(db) ? OUT_OF_RANGE : NOT_AN_INTEGER;
  },
};
