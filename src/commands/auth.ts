import { createHash, timingSafeEqual } from 'node:crypto';
import type { Command } from './types.js';
import { OK, error } from '../protocol/encoder.js';

/** Digest of a password as it arrives on the wire: words are decoded one char per byte (latin1). */
export const digestPassword = (password: string): Buffer => createHash('sha256').update(password, 'latin1').digest();

/**
 * Digest of the configured password. It comes from argv, the environment or a
 * file as Unicode text, and a client sends it as UTF-8 bytes, so those bytes are hashed.
 */
export const digestConfiguredPassword = (password: string): Buffer => createHash('sha256').update(password, 'utf8').digest();

/**
 * AUTH <password> (or AUTH default <password>, as Redis 6 clients send).
 * Comparing digests keeps the comparison constant-time whatever the lengths.
 */
export const auth: Command = {
  name: 'AUTH',
  minArgs: 1,
  maxArgs: 2,
  beforeAuth: true,
  run(words, session, services) {
    if (services.passwordDigest === null) {
      return error('ERR', 'AUTH called, but this server has no password (--requirepass is not set)');
    }
    const user = words.length === 3 ? words[1]! : 'default';
    const given = digestPassword(words[words.length - 1]!);
    const match = timingSafeEqual(given, services.passwordDigest) && user === 'default';
    if (!match) {
      services.authFailed();
      return error('WRONGPASS', 'invalid password');
    }
    session.authenticated = true;
    return OK;
  },
};
