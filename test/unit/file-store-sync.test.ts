/**
 * kill -9 keeps the page cache, so only a check of the writes themselves shows that persists wait for
 * the disk. With syncedWrites (the default on Linux) every append goes to a log opened with O_DSYNC
 * (its write returns once the data is on the disk, as a write and an fdatasync would), and a persist
 * resolves only after that write has returned; without it, only after an fdatasync of the log.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { FileStore } from '../../src/store/file.js';
import { descriptorsOn, fdPath, fileHandlePrototype, tempDir } from '../helpers/files.js';
import { waitFor } from '../helpers/wait.js';

interface Write {
  path: string;
  dsync: boolean;
}

function describeFd(fd: number): Write {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const flags = /^flags:\s*([0-7]+)$/m.exec(info);
  assert.ok(flags, `no flags in /proc/self/fdinfo/${fd}`);
  return { path: fdPath(fd), dsync: (parseInt(flags[1]!, 8) & fs.constants.O_DSYNC) !== 0 };
}

/**
 * Persists marks 1..12 into a new directory, compacting every few persists so that
 * the log appended to is one a compaction made, then 100..111 into the same
 * directory reopened, without compacting: every append goes to the log reopened.
 */
async function persistRounds(dir: string, blockingCommits: boolean, each: (store: FileStore, i: bigint) => Promise<void>): Promise<void> {
  for (const [start, compactAfterBytes] of [[1n, 200], [100n, 1 << 20]] as const) {
    const store = await FileStore.open(dir, { compactAfterBytes, blockingCommits, syncedWrites: true });
    await store.load();
    for (let i = start; i < start + 12n; i++) await each(store, i);
    await store.close();
  }
}

test('every append waits for its write to a log opened with O_DSYNC before persist resolves', async (t) => {
  const dir = await tempDir(t);
  const proto = await fileHandlePrototype();
  const log = join(dir, 'marks.log');
  const appends: Write[] = [];
  /** Each append to the log is held back, done but not reported, until the test calls `release`. */
  let release: (() => void) | null = null;
  let onAppend: (() => void) | null = null;
  const original = proto.write;
  proto.write = function (this: { fd: number }, ...args: unknown[]) {
    const write = describeFd(this.fd);
    const done: Promise<unknown> = original.apply(this, args);
    if (write.path !== log) return done;
    appends.push(write);
    return new Promise((resolve, reject) => {
      release = () => void done.then(resolve, reject);
      onAppend?.();
    });
  };
  t.after(() => {
    proto.write = original;
  });
  await persistRounds(dir, false, async (store, i) => {
    const before = appends.length;
    let resolved = false;
    // Set first: the append may start before persist returns.
    const appending = new Promise<true>((r) => (onAppend = () => r(true)));
    const persisted = store.persist(new Map([['a', i]])).then(() => {
      resolved = true;
    });
    // A compaction writes the whole state instead, into new files synced before they are renamed.
    const appended = await Promise.race([appending, persisted.then(() => false)]);
    onAppend = null;
    if (!appended) {
      assert.ok(i < 100n, `persist ${i} into the reopened log compacted`);
      return;
    }
    assert.deepEqual(appends.slice(before), [{ path: log, dsync: true }], `persist ${i} appends to the log with O_DSYNC`);
    // Give it every chance to resolve early: the path check beside the write takes microseconds.
    await Promise.race([persisted, new Promise((r) => setTimeout(r, 100))]);
    assert.equal(resolved, false, `persist ${i} resolved before its write returned`);
    const go = release as (() => void) | null;
    release = null;
    go!();
    await persisted;
  });
  // 12 into the reopened log, and some into logs compactions made.
  assert.ok(appends.length > 12, `only ${appends.length} appends`);
});

test('with blocking commits, every append is a write to a log opened with O_DSYNC', async (t) => {
  const dir = await tempDir(t);
  const log = join(dir, 'marks.log');
  const appends: Write[] = [];
  const original = fs.writeSync;
  fs.writeSync = ((fd: number, ...args: unknown[]) => {
    const write = describeFd(fd);
    if (write.path === log) appends.push(write);
    return (original as (...a: unknown[]) => number)(fd, ...args);
  }) as typeof fs.writeSync;
  t.after(() => {
    fs.writeSync = original;
  });
  await persistRounds(dir, true, async (store, i) => {
    const before = appends.length;
    await store.persist(new Map([['a', i]]));
    const expected = i >= 100n ? [{ path: log, dsync: true }] : appends.slice(before).map(() => ({ path: log, dsync: true }));
    assert.deepEqual(appends.slice(before), expected, `persist ${i}`);
  });
  assert.ok(appends.length > 12, `only ${appends.length} appends`);
});

test('without syncedWrites, every persist waits for a real fdatasync of the log it appended to before it resolves', async (t) => {
  const dir = await tempDir(t);
  const proto = await fileHandlePrototype();
  const synced: string[] = [];
  /** While set, each datasync is held back, done but not reported, until the test lets it go. */
  let holding = false;
  let release: (() => void) | null = null;
  const origD = proto.datasync;
  proto.datasync = function (this: { fd: number }) {
    synced.push(fdPath(this.fd));
    const done: Promise<void> = origD.call(this);
    if (!holding) return done;
    return new Promise<void>((resolve, reject) => {
      release = () => void done.then(resolve, reject);
    });
  };
  t.after(() => {
    proto.datasync = origD;
  });
  const store = await FileStore.open(dir, { compactAfterBytes: 1 << 20, syncedWrites: false });
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

test('without syncedWrites, with blocking commits, every append reaches a real fdatasync of the log before persist resolves', async (t) => {
  const dir = await tempDir(t);
  const synced: string[] = [];
  const original = fs.fdatasyncSync;
  fs.fdatasyncSync = (fd: number) => {
    synced.push(fdPath(fd));
    original(fd);
  };
  t.after(() => {
    fs.fdatasyncSync = original;
  });
  const store = await FileStore.open(dir, { compactAfterBytes: 1 << 20, blockingCommits: true, syncedWrites: false });
  await store.load();
  await store.persist(new Map([['a', 1n]]));
  for (let i = 2n; i < 6n; i++) {
    const before = synced.length;
    await store.persist(new Map([['a', i]]));
    assert.deepEqual(synced.slice(before), [join(dir, 'marks.log')], `persist ${i}`);
  }
  await store.close();
});

test('on Linux, appends are O_DSYNC writes unless told otherwise', async (t) => {
  const dir = await tempDir(t);
  const store = await FileStore.open(dir);
  t.after(() => store.close());
  await store.load();
  await store.persist(new Map([['a', 1n]]));
  const log = join(dir, 'marks.log');
  assert.deepEqual(descriptorsOn(log).map(describeFd), [{ path: log, dsync: true }]);
});
