/** kill -9 keeps the page cache, so only a check of the sync calls themselves shows that persists wait for the disk. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../src/store/file.js';
import { waitFor } from '../helpers/wait.js';

test('every persist waits for a real fdatasync of the log it appended to before it resolves', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dolmeangi-sync-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const probe = await open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  const synced: string[] = [];
  /** While set, each datasync is held back, done but not reported, until the test lets it go. */
  let holding = false;
  let release: (() => void) | null = null;
  const origD = proto.datasync;
  proto.datasync = function (this: { fd: number }) {
    synced.push(fs.readlinkSync(`/proc/self/fd/${this.fd}`));
    const done: Promise<void> = origD.call(this);
    if (!holding) return done;
    return new Promise<void>((resolve, reject) => {
      release = () => void done.then(resolve, reject);
    });
  };
  t.after(() => {
    proto.datasync = origD;
  });
  const store = await FileStore.open(dir, { compactAfterBytes: 1 << 20 });
  await store.load();
  await store.persist(new Map([['a', 1n]]));
  for (let i = 2n; i < 6n; i++) {
    holding = true;
    const before = synced.length;
    let resolved = false;
    const persisted = store.persist(new Map([['a', i]])).then(() => {
      resolved = true;
    });
    await waitFor(() => release !== null, `persist ${i} to sync`);
    assert.deepEqual(synced.slice(before), [join(dir, 'marks.log')], `persist ${i} syncs the log`);
    // Give it every chance to resolve early: the path check beside the sync takes microseconds.
    await Promise.race([persisted, new Promise((r) => setTimeout(r, 100))]);
    assert.equal(resolved, false, `persist ${i} resolved before its sync completed`);
    holding = false;
    const go = release as (() => void) | null;
    release = null;
    go!();
    await persisted;
  }
  await store.close();
});

test('with blocking commits, every append reaches a real fdatasync of the log before persist resolves', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dolmeangi-sync-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const synced: string[] = [];
  const original = fs.fdatasyncSync;
  fs.fdatasyncSync = (fd: number) => {
    synced.push(fs.readlinkSync(`/proc/self/fd/${fd}`));
    original(fd);
  };
  t.after(() => {
    fs.fdatasyncSync = original;
  });
  const store = await FileStore.open(dir, { compactAfterBytes: 1 << 20, blockingCommits: true });
  await store.load();
  await store.persist(new Map([['a', 1n]]));
  for (let i = 2n; i < 6n; i++) {
    const before = synced.length;
    await store.persist(new Map([['a', i]]));
    assert.deepEqual(synced.slice(before), [join(dir, 'marks.log')], `persist ${i}`);
  }
  await store.close();
});
