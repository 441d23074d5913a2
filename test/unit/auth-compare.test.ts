/**
 * AUTH's password check: constant-time, whatever the lengths of what is sent
 * and what is set. A timing measurement would be too noisy to decide that, so
 * the test watches the comparison itself: every AUTH compares two digests of
 * equal, fixed length with crypto.timingSafeEqual, and nothing else decides.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import { auth, digestConfiguredPassword } from '../../src/commands/auth.js';
import { newSession, type Services } from '../../src/commands/index.js';

test('AUTH compares fixed-length digests with timingSafeEqual, whatever the lengths of the passwords', () => {
  const compared: Array<[number, number]> = [];
  const original = crypto.timingSafeEqual;
  // Replaced on the module object, then pushed to the named imports of ES modules.
  crypto.timingSafeEqual = (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView): boolean => {
    compared.push([a.byteLength, b.byteLength]);
    return original(a, b);
  };
  syncBuiltinESMExports();
  try {
    const services = { passwordDigest: digestConfiguredPassword('s3cret'), authFailed: () => {} } as unknown as Services;
    for (const [sent, ok] of [
      ['x', false],
      ['s3cre', false],
      ['s3cret but longer, and much longer than the password that is set', false],
      ['', false],
      ['s3cret', true],
    ] as const) {
      const session = newSession();
      const before = compared.length;
      const reply = auth.run(['AUTH', sent], session, services);
      assert.equal(reply, ok ? '+OK\r\n' : '-WRONGPASS invalid password\r\n', `AUTH ${JSON.stringify(sent)}`);
      assert.equal(session.authenticated, ok);
      assert.deepEqual(compared.slice(before), [[32, 32]], `AUTH ${JSON.stringify(sent)}: one comparison of two 32-byte digests`);
    }
  } finally {
    crypto.timingSafeEqual = original;
    syncBuiltinESMExports();
  }
});
