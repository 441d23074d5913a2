/**
 * The data directory's flock, where starting `flock` goes wrong in a way the
 * file store's tests cannot bring about with a PATH: Node.js throws some spawn
 * failures instead of emitting them (anything but EACCES, EAGAIN, EMFILE, ENFILE
 * and ENOENT). The store must hear "unavailable" and keep no descriptor open.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import childProcess from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { holdKernelLock } from '../../src/store/kernel-lock.js';
import { descriptorsOn } from '../helpers/files.js';

test('a spawn of flock that throws reports the lock unavailable, with the reason, and closes the directory', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dolmeangi-kernel-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const original = childProcess.spawn;
  const failure = Object.assign(new Error('spawn EBADF'), { code: 'EBADF' });
  let calls = 0;
  // Replaced on the module object, then pushed to the named imports of ES modules.
  childProcess.spawn = (() => {
    calls++;
    throw failure;
  }) as unknown as typeof childProcess.spawn;
  syncBuiltinESMExports();
  try {
    const lock = await holdKernelLock(dir);
    assert.deepEqual(lock, { state: 'unavailable', reason: 'flock: spawn EBADF' });
    assert.equal(calls, 1, 'no look from outside after the lock was not taken');
    assert.equal(descriptorsOn(dir).length, 0, 'the directory descriptor is closed');
  } finally {
    childProcess.spawn = original;
    syncBuiltinESMExports();
  }
});

test('the same descriptor check sees the directory open while the lock is held', async (t) => {
  // So the check above cannot pass because it looks at the wrong thing.
  const dir = mkdtempSync(join(tmpdir(), 'dolmeangi-kernel-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const lock = await holdKernelLock(dir);
  assert.equal(lock.state, 'held');
  assert.equal(descriptorsOn(dir).length, 1);
  if (lock.state === 'held') lock.release();
  assert.equal(descriptorsOn(dir).length, 0);
});
