/**
 * MULTI, EXEC and DISCARD, so that a transaction fails whole and visibly. This
 * server has no transactions; without these, a client's MULTI ... EXEC would run
 * the commands between at once and then fail on EXEC, and the client would drop
 * their replies: numbers taken, and nobody told. Inside MULTI every other
 * command is refused unrun (see execute in index.ts), and EXEC then answers
 * EXECABORT, as Redis does for a command it could not queue.
 */
import type { Command } from './types.js';
import { OK, error } from '../protocol/encoder.js';

const NESTED = error('ERR', 'MULTI calls can not be nested');
const EXEC_WITHOUT = error('ERR', 'EXEC without MULTI');
const DISCARD_WITHOUT = error('ERR', 'DISCARD without MULTI');
const EXECABORT = error('EXECABORT', 'Transaction discarded because of previous errors.');
const EMPTY = '*0\r\n';

export const multi: Command = {
  name: 'MULTI',
  minArgs: 0,
  maxArgs: 0,
  inTransaction: true,
  unlisted: true,
  run(_words, session) {
    if (session.transaction !== null) return NESTED;
    session.transaction = 'empty';
    return OK;
  },
};

export const exec: Command = {
  name: 'EXEC',
  minArgs: 0,
  maxArgs: 0,
  inTransaction: true,
  unlisted: true,
  run(_words, session) {
    const t = session.transaction;
    if (t === null) return EXEC_WITHOUT;
    session.transaction = null;
    // Nothing was asked for, so nothing was refused: the empty transaction succeeds.
    return t === 'empty' ? EMPTY : EXECABORT;
  },
};

export const discard: Command = {
  name: 'DISCARD',
  minArgs: 0,
  maxArgs: 0,
  inTransaction: true,
  unlisted: true,
  run(_words, session) {
    if (session.transaction === null) return DISCARD_WITHOUT;
    session.transaction = null;
    return OK;
  },
};

/** The reply to any other command inside MULTI: it was not run, and the transaction will fail. */
export function refusedInTransaction(name: string): string {
  return error(
    'ERR',
    `${name} was not run: this server has no transactions, so EXEC will discard this one; send the commands without MULTI (a pipeline needs none)`,
  );
}
