/** kill -9 keeps the page cache, so only a check of the sync calls themselves shows that persists wait for the disk. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../src/store/file.js';

test('every persist reaches a real fdatasync/fsync of the file it wrote before it resolves', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dolmeangi-sync-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const probe = await open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  let syncs = 0;
  const origD = proto.datasync;
  const origS = proto.sync;
  proto.datasync = function (this: unknown) {
    syncs++;
    return origD.call(this);
  };
  proto.sync = function (this: unknown) {
    syncs++;
    return origS.call(this);
  };
  t.after(() => {
    proto.datasync = origD;
    proto.sync = origS;
  });
  const store = await FileStore.open(dir, { compactAfterBytes: 1 << 20 });
  await store.load();
  await store.persist(new Map([['a', 1n]]));
  for (let i = 2n; i < 6n; i++) {
    const before = syncs;
    await store.persist(new Map([['a', i]]));
    assert.ok(syncs > before, `persist ${i} resolved with no sync`);
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
