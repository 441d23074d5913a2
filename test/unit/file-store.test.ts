import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs, { mkdirSync, readFileSync, renameSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rename, rm, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { constants, hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { FileStore, isZombie, type FileStoreOptions } from '../../src/store/file.js';
import { END, MAX_VALUE } from '../../src/core/limits.js';
import { DataDirLockedError, PersistenceError, StateCorruptError } from '../../src/errors.js';
import { waitFor } from '../helpers/wait.js';
import { childrenRunning } from '../helpers/children.js';
import { flockHeld } from '../helpers/flock.js';
import { descriptorsOn, fdPath, fileHandlePrototype, tempDir } from '../helpers/files.js';


const paths = (dir: string) => ({
  snapshot: join(dir, 'marks.snapshot'),
  log: join(dir, 'marks.log'),
  lock: join(dir, 'LOCK'),
});

/** Opens and loads, closing the store when the test ends. */
async function openLoaded(t: TestContext, dir: string, opts: FileStoreOptions = {}) {
  const store = await FileStore.open(dir, opts);
  t.after(() => store.close());
  const marks = await store.load();
  return { store, marks };
}

async function reload(dir: string, opts: FileStoreOptions = {}): Promise<Map<string, bigint>> {
  const store = await FileStore.open(dir, opts);
  try {
    return await store.load();
  } finally {
    await store.close();
  }
}

/** Where appends run, and how they reach the disk: one O_DSYNC write (Linux) or a write and an fdatasync (elsewhere). */
const COMMIT_MODES = [
  { name: 'thread-pool commits', opts: { blockingCommits: false, syncedWrites: true } },
  { name: 'blocking commits', opts: { blockingCommits: true, syncedWrites: true } },
  { name: 'thread-pool commits, write then fdatasync', opts: { blockingCommits: false, syncedWrites: false } },
  { name: 'blocking commits, write then fdatasync', opts: { blockingCommits: true, syncedWrites: false } },
] as const;

const m = (entries: Record<string, bigint>) => new Map(Object.entries(entries));

/** A record as the store frames it: length, CRC32, payload. */
function record(payload: string): Buffer {
  const body = Buffer.from(payload);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(body.length, 0);
  head.writeUInt32BE(crc32(body), 4);
  return Buffer.concat([head, body]);
}

function flip(buf: Buffer, at: number, bits: number): Buffer {
  buf.writeUInt8(buf.readUInt8(at) ^ bits, at);
  return buf;
}

function errno(code: keyof typeof constants.errno, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected, ${syscall}`), { code, syscall, errno: -constants.errno[code] });
}

/** Fails the `nth` (0-based) file-system call made after arm(), then lets everything through. */
function faultAt(nth: number, code: keyof typeof constants.errno = 'EIO') {
  let armed = false;
  let seen = 0;
  const ops: string[] = [];
  return {
    ops,
    arm: () => {
      armed = true;
      seen = 0;
      ops.length = 0;
    },
    hook: (op: string, path: string) => {
      if (!armed) return;
      ops.push(`${op} ${path}`);
      if (seen++ === nth) throw errno(code, op);
    },
  };
}

async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await once(child, 'exit');
  return child.pid!;
}

function livePid(t: TestContext): number {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  return child.pid!;
}

const lockJson = (pid: number, host = hostname()) => JSON.stringify({ pid, host, started: new Date().toISOString() });

test('a fresh directory is created with mode 0700 and loads empty', async (t) => {
  const dir = join(await tempDir(t), 'a', 'b');
  const { store, marks } = await openLoaded(t, dir);
  assert.equal(store.description, `file:${dir}`);
  assert.deepEqual(marks, new Map());
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
});

test('marks round-trip, and the last persisted value of each name wins', async (t) => {
  const dir = await tempDir(t);
  const { store } = await openLoaded(t, dir);
  await store.persist(m({ a: 10n, b: 20n }));
  await store.persist(m({ a: 30n }));
  await store.persist(m({ c: 5n, a: 25n }));
  await store.close();
  assert.deepEqual(await reload(dir), m({ a: 25n, b: 20n, c: 5n }));
});

test('values up to 2^63 survive exactly', async (t) => {
  const dir = await tempDir(t);
  const { store } = await openLoaded(t, dir);
  const values = m({ zero: 0n, big: 2n ** 53n + 1n, max: MAX_VALUE, end: END });
  await store.persist(values);
  await assert.rejects(store.persist(m({ x: END + 1n })), RangeError);
  await assert.rejects(store.persist(m({ x: -1n })), RangeError);
  await store.close();
  assert.deepEqual(await reload(dir), values);
});

test('a data directory path that names a regular file is refused as not a directory', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'not-a-dir');
  await writeFile(file, 'x');
  await assert.rejects(FileStore.open(file), (err: unknown) => err instanceof PersistenceError && err.message === `${file} is not a directory: point --data-dir at a directory, or at a path where one can be made`);
  assert.equal(await readFile(file, 'utf8'), 'x', 'left as it was');
});

test('many persists, with reopens in between, all come back', async (t) => {
  const dir = await tempDir(t);
  const expected = new Map<string, bigint>();
  for (let round = 0; round < 3; round++) {
    const store = await FileStore.open(dir);
    assert.deepEqual(await store.load(), expected);
    for (let i = 0; i < 300; i++) {
      const batch = m({ [`s${i % 37}`]: BigInt(round * 1000 + i), [`t${i % 5}`]: BigInt(i) * 7n });
      await store.persist(batch);
      for (const [k, v] of batch) expected.set(k, v);
    }
    await store.close();
  }
  assert.deepEqual(await reload(dir), expected);
});

test('compaction keeps the log short and loses nothing', async (t) => {
  const dir = await tempDir(t);
  const p = paths(dir);
  const { store } = await openLoaded(t, dir, { compactAfterBytes: 300 });
  const expected = new Map<string, bigint>();
  for (let i = 0; i < 500; i++) {
    const batch = m({ [`seq${i % 11}`]: BigInt(i) });
    await store.persist(batch);
    for (const [k, v] of batch) expected.set(k, v);
    assert.ok((await stat(p.log)).size <= 300, 'log stays under the threshold');
  }
  await store.close();
  assert.ok((await stat(p.snapshot)).size > 0);
  assert.deepEqual(await reload(dir, { compactAfterBytes: 300 }), expected);
  assert.deepEqual(await reload(dir), expected);
});

test('a torn log tail is cut off with a warning and the good records kept', async (t) => {
  const tails: [string, Buffer][] = [
    ['a partial record', record('{"v":1,"m":{"a":"999"}}').subarray(0, 15)],
    ['a partial header', Buffer.from([0, 0, 1])],
    ['zero fill', Buffer.alloc(40)],
    ['a header claiming an impossible length', (() => {
      const r = record('{"v":1,"m":{"a":"999"}}');
      r.writeUInt32BE(0xfffffff0, 0);
      return r;
    })()],
    ['a record whose first bytes never reached the disk', (() => {
      const r = record(`{"v":1,"m":{"a":"999","${'b'.repeat(60)}":"1"}}`);
      r.fill(0, 0, 12);
      return r;
    })()],
    ['a last record whose end never reached the disk (a bad checksum)', (() => {
      const r = record('{"v":1,"m":{"a":"999"}}');
      r.fill(0, r.length - 6);
      return r;
    })()],
  ];
  for (const [what, tail] of tails) {
    const dir = await tempDir(t);
    const p = paths(dir);
    const { store } = await openLoaded(t, dir);
    await store.persist(m({ a: 1n, b: 2n }));
    await store.persist(m({ a: 3n }));
    await store.close();
    const goodSize = (await stat(p.log)).size;
    await appendFile(p.log, tail);

    const warnings: string[] = [];
    const again = await FileStore.open(dir, { log: (msg) => warnings.push(msg) });
    assert.deepEqual(await again.load(), m({ a: 3n, b: 2n }), what);
    assert.equal((await stat(p.log)).size, goodSize, `${what}: truncated back to the last good record`);
    assert.ok(warnings.some((w) => w.includes('torn')), what);
    await again.persist(m({ b: 4n }));
    await again.close();
    assert.deepEqual(await reload(dir), m({ a: 3n, b: 4n }), what);
  }
});

/** A directory holding a snapshot and a log with two records after its header. */
async function populated(t: TestContext) {
  const dir = await tempDir(t);
  const p = paths(dir);
  const store = await FileStore.open(dir);
  await store.load();
  await store.persist(m({ a: 1n }));
  const headerEnd = (await stat(p.log)).size;
  await store.persist(m({ a: 2n }));
  await store.persist(m({ b: 3n }));
  await store.close();
  return { dir, p, headerEnd };
}

async function assertCorrupt(dir: string, file: string, detail: RegExp): Promise<void> {
  const store = await FileStore.open(dir);
  try {
    await assert.rejects(store.load(), (err: unknown) => {
      assert.ok(err instanceof StateCorruptError, String(err));
      assert.equal(err.file, file);
      assert.ok(err.message.includes(file), err.message);
      assert.match(err.message, detail);
      return true;
    });
  } finally {
    await store.close();
  }
}

test('a complete, well-formed last record with a bad checksum is damage, not a tear: start-up refuses', async (t) => {
  const { dir, p } = await populated(t);
  const buf = await readFile(p.log);
  // The last record holds {"b":"3"}: one digit changed, as by a bad sector or a stray write.
  const at = buf.lastIndexOf('"3"');
  assert.ok(at > 0);
  buf[at + 1] = '7'.charCodeAt(0);
  await writeFile(p.log, buf);
  await assertCorrupt(dir, p.log, /the last record, at byte \d+, is complete and well-formed but fails its checksum/);
  assert.deepEqual(await readFile(p.log), buf, 'nothing truncated');
});

test('a bad checksum in the middle of the log is corruption, not a torn tail', async (t) => {
  const { dir, p, headerEnd } = await populated(t);
  const buf = await readFile(p.log);
  flip(buf, headerEnd + 12, 0x01);
  await writeFile(p.log, buf);
  await assertCorrupt(dir, p.log, /checksum mismatch/);
  // The last record broken too, into bytes no complete record would hold: only that one could be
  // a tear, and the one before it is still damage, with numbers acknowledged on it.
  const last = buf.lastIndexOf('{');
  buf[last] = 'x'.charCodeAt(0);
  await writeFile(p.log, buf);
  await assertCorrupt(dir, p.log, /checksum mismatch/);
  assert.deepEqual(await readFile(p.log), buf, 'nothing truncated');
});

test('a damaged record with intact ones after it is corruption, not a torn tail, and the log is left as it was', async (t) => {
  const { dir, p, headerEnd } = await populated(t);
  const buf = await readFile(p.log);
  // A length that reaches past the end looks like a tear, but the record for b=3 follows.
  buf.writeUInt32BE(buf.length, headerEnd);
  await writeFile(p.log, buf);
  await assertCorrupt(dir, p.log, new RegExp(`record at byte ${headerEnd} is damaged .*intact record follows`));
  assert.deepEqual(await readFile(p.log), buf, 'not truncated');
});

test('a missing log beside a snapshot is corruption, at the first generation too', async (t) => {
  const { dir, p } = await populated(t);
  const first = await readFile(p.snapshot);
  // populated() wrote generation 1 and appended to its log: without the log, a resumes at 1, not 2.
  const log = await readFile(p.log);
  await unlink(p.log);
  await assertCorrupt(dir, p.log, /missing beside .*generation 1/);
  await writeFile(p.log, log);
  // One compaction more makes generation 2.
  const store = await FileStore.open(dir, { compactAfterBytes: 0 });
  await store.load();
  await store.persist(m({ a: 4n }));
  await store.close();
  await unlink(p.log);
  await assertCorrupt(dir, p.log, /missing beside .*generation 2/);
  await writeFile(p.snapshot, first);
  await assertCorrupt(dir, p.log, /missing beside .*generation 1/);
});

test('the very first compaction cut short at each step leaves a directory that loads', async (t) => {
  // The steps: an empty log of generation 0, the snapshot of generation 1, the log of generation 1.
  const steps: Array<{ what: string; failAt: (op: string, path: string, p: ReturnType<typeof paths>, renamed: string[]) => boolean; expect: Map<string, bigint> }> = [
    { what: 'before the empty log', failAt: (op, path, p) => op === 'open' && path.startsWith(`${p.log}.tmp-`), expect: m({}) },
    { what: 'before the snapshot', failAt: (op, path, p) => op === 'open' && path.startsWith(`${p.snapshot}.tmp-`), expect: m({}) },
    { what: 'before the log of generation 1', failAt: (op, path, p, renamed) => renamed.includes(p.snapshot) && op === 'open' && path.startsWith(`${p.log}.tmp-`), expect: m({ a: 7n }) },
  ];
  for (const step of steps) {
    const dir = await tempDir(t);
    const p = paths(dir);
    const renamed: string[] = [];
    const store = await FileStore.open(dir, {
      beforeIo: (op, path) => {
        if (op === 'rename') renamed.push(path);
        if (step.failAt(op, path, p, renamed)) throw errno('EIO', op);
      },
    });
    await store.load();
    await assert.rejects(store.persist(m({ a: 7n })), /EIO/, step.what);
    await store.close();
    assert.deepEqual(await reload(dir), step.expect, step.what);
    // And it goes on from there as any directory does.
    const again = await FileStore.open(dir);
    await again.load();
    await again.persist(m({ a: 9n }));
    await again.persist(m({ b: 1n }));
    await again.close();
    assert.deepEqual(await reload(dir), m({ a: 9n, b: 1n }), step.what);
  }
});

/** A store's options that fail every `op` on a temp file of `target` with `code`. */
function failOnTemp(op: string, target: string, code: keyof typeof constants.errno): FileStoreOptions {
  return {
    beforeIo: (o, path) => {
      if (o === op && path.startsWith(`${target}.tmp-`)) throw errno(code, o);
    },
  };
}

test('a failure writing a temp file reads the same at every retry: its random part is left out of the reason', async (t) => {
  const dir = await tempDir(t);
  const p = paths(dir);
  const store = await FileStore.open(dir, failOnTemp('write', p.snapshot, 'ENOSPC'));
  try {
    await store.load();
    const reasons: string[] = [];
    for (let i = 0; i < 3; i++) await store.persist(m({ a: 7n })).catch((err: Error) => reasons.push(err.message));
    assert.equal(reasons.length, 3);
    assert.equal(reasons[0], `write ${p.snapshot}.tmp-*: ENOSPC (no space left on device)`);
    assert.deepEqual(new Set(reasons).size, 1, reasons.join('\n'));
  } finally {
    await store.close();
  }
});

test('a log of generation 0 is taken alone only while empty: with records, or beside no snapshot otherwise, it is corruption', async (t) => {
  const dir = await tempDir(t);
  const p = paths(dir);
  const store = await FileStore.open(dir, failOnTemp('open', p.snapshot, 'EIO'));
  await store.load();
  await assert.rejects(store.persist(m({ a: 7n })), /EIO/);
  await store.close();
  const empty = await readFile(p.log);
  await writeFile(p.log, Buffer.concat([empty, Buffer.from([0, 0, 0, 1, 0, 0, 0, 0, 0x7b])]));
  await assertCorrupt(dir, p.log, /continues snapshot generation 0, but .* is missing/);
  await writeFile(p.log, empty);
  assert.deepEqual(await reload(dir), m({}));
});

test('two compactions in a row that each stop between the snapshot and the log still load', async (t) => {
  const dir = await tempDir(t);
  const p = paths(dir);
  // Each store fails its compaction right after the new snapshot is in place, as a crash would.
  const crashAfterSnapshot = (): FileStoreOptions => {
    let snapshotInstalled = false;
    return {
      compactAfterBytes: 0,
      beforeIo: (op, path) => {
        if (op === 'rename' && path === p.snapshot) snapshotInstalled = true;
        if (snapshotInstalled && op === 'open' && path.startsWith(`${p.log}.tmp-`)) throw errno('EIO', op);
      },
    };
  };
  for (const a of [100n, 200n]) {
    const store = await FileStore.open(dir, crashAfterSnapshot());
    await store.load();
    await assert.rejects(store.persist(m({ a })), /EIO/);
    await store.close();
  }
  assert.deepEqual(await reload(dir), m({ a: 200n }));
});

test('an impossible record length in the log is corruption', async (t) => {
  const { dir, p, headerEnd } = await populated(t);
  const buf = await readFile(p.log);
  buf.writeUInt32BE(0xfffffff0, headerEnd);
  await writeFile(p.log, buf);
  await assertCorrupt(dir, p.log, /impossible length/);
});

test('well-framed records with bad content are corruption, even at the end', async (t) => {
  const cases: [string, RegExp][] = [
    ['{"v":2,"m":{"a":"5"}}', /format version 2/],
    ['{"m":{"a":"5"}}', /format version undefined/],
    ['not json', /not valid JSON/],
    ['[1]', /not a JSON object/],
    ['{"v":1}', /no marks object/],
    ['{"v":1,"m":{"a":5}}', /not a decimal integer/],
    ['{"v":1,"m":{"a":"-1"}}', /not a decimal integer/],
    ['{"v":1,"m":{"a":"1e3"}}', /not a decimal integer/],
    [`{"v":1,"m":{"a":"${END + 1n}"}}`, /not a decimal integer/],
  ];
  for (const [payload, detail] of cases) {
    const { dir, p } = await populated(t);
    await appendFile(p.log, record(payload));
    await assertCorrupt(dir, p.log, detail);
  }
});

test('a snapshot with a bad magic, checksum, version or length is corruption', async (t) => {
  const mutations: [string, (b: Buffer) => Buffer, RegExp][] = [
    ['magic', (b) => (b.write('XXXXXXXX', 0, 'latin1'), b), /does not start with DOLSEQ01/],
    ['later magic', (b) => (b.write('DOLSEQ02', 0, 'latin1'), b), /starts with DOLSEQ02, a later format than the DOLSEQ01 this dolmeangi reads, so a newer release wrote it\); refusing .* Run the release that wrote it, or a later one/],
    ['earlier magic', (b) => (b.write('DOLSEQ00', 0, 'latin1'), b), /not a dolmeangi snapshot: it does not start with DOLSEQ01/],
    ['crc', (b) => flip(b, b.length - 2, 0x20), /checksum mismatch/],
    ['cut', (b) => b.subarray(0, b.length - 3), /incomplete/],
    ['trailing', (b) => Buffer.concat([b, Buffer.from('x')]), /unexpected bytes/],
    ['empty', () => Buffer.alloc(0), /does not start with/],
    ['version', () => Buffer.concat([Buffer.from('DOLSEQ01'), record('{"v":7,"g":1,"m":{}}')]), /format version 7; .*so a newer release wrote it\); refusing .* Run the release that wrote it/],
    ['version 0', () => Buffer.concat([Buffer.from('DOLSEQ01'), record('{"v":0,"g":1,"m":{}}')]), /format version 0; this dolmeangi reads version 1\); refusing .* Restore it from a backup/],
    ['generation', () => Buffer.concat([Buffer.from('DOLSEQ01'), record('{"v":1,"g":"1","m":{}}')]), /bad generation/],
    // Snapshots start at 1: one of 0 would also pass for a first snapshot needing no log beside it.
    ['generation 0', () => Buffer.concat([Buffer.from('DOLSEQ01'), record('{"v":1,"g":0,"m":{}}')]), /bad generation 0/],
    ['negative generation', () => Buffer.concat([Buffer.from('DOLSEQ01'), record('{"v":1,"g":-1,"m":{}}')]), /bad generation -1/],
  ];
  for (const [what, mutate, detail] of mutations) {
    const { dir, p } = await populated(t);
    await writeFile(p.snapshot, mutate(await readFile(p.snapshot)));
    await assertCorrupt(dir, p.snapshot, detail).catch((err: Error) => {
      throw new Error(`${what}: ${err.message}`, { cause: err });
    });
  }
});

test('a log whose snapshot is missing or older refuses to load', async (t) => {
  {
    const { dir, p } = await populated(t);
    await unlink(p.snapshot);
    await assertCorrupt(dir, p.log, /is missing/);
  }
  {
    // As a compaction leaves it: the log of generation 1 has no record yet, and the marks are all in the snapshot.
    const { dir, p, headerEnd } = await populated(t);
    await truncate(p.log, headerEnd);
    await unlink(p.snapshot);
    await assertCorrupt(dir, p.log, /continues snapshot generation 1, but .* is missing/);
  }
  {
    const { dir, p } = await populated(t);
    const snapshot = await readFile(p.snapshot);
    // Two more compactions move the log to generation 3; then put generation 1 back.
    const store = await FileStore.open(dir, { compactAfterBytes: 0 });
    await store.load();
    await store.persist(m({ a: 10n }));
    await store.persist(m({ a: 11n }));
    await store.close();
    await writeFile(p.snapshot, snapshot);
    await assertCorrupt(dir, p.log, /older copy/);
  }
  {
    const { dir, p } = await populated(t);
    await writeFile(p.log, Buffer.concat([Buffer.from('DOLLOG01'), record('{"v":1,"g":1}')]).subarray(0, 20));
    await assertCorrupt(dir, p.log, /incomplete/);
  }
});

test('a crash between the new snapshot and the new log leaves the snapshot in charge', async (t) => {
  const dir = await tempDir(t);
  const p = paths(dir);
  const fault = { on: false };
  const logs: string[] = [];
  const { store } = await openLoaded(t, dir, {
    compactAfterBytes: 0,
    log: (msg) => logs.push(msg),
    beforeIo: (op, path) => {
      if (fault.on && op === 'rename' && path === p.log) throw errno('EIO', op);
    },
  });
  await store.persist(m({ a: 1n, b: 1n }));
  await store.persist(m({ a: 2n }));
  fault.on = true;
  await assert.rejects(store.persist(m({ a: 3n })), /rename .*marks\.log: EIO/);
  await store.close();
  // The old log still says a=2, but the newer snapshot holds a=3 and wins.
  const reopened = await FileStore.open(dir, { log: (msg) => logs.push(msg) });
  assert.deepEqual(await reopened.load(), m({ a: 3n, b: 1n }));
  assert.ok(logs.some((l) => l.includes('interrupted compaction')));
  await reopened.persist(m({ b: 9n }));
  await reopened.close();
  assert.deepEqual(await reload(dir), m({ a: 3n, b: 9n }));
});

test('a compaction replaces each file whole: write and fsync a temp file, rename it, fsync the directory', async (t) => {
  const dir = await tempDir(t);
  const probe = faultAt(Number.MAX_SAFE_INTEGER);
  const store = await FileStore.open(dir, { compactAfterBytes: 0, beforeIo: probe.hook });
  t.after(() => store.close());
  await store.load();
  await store.persist(m({ a: 1n }));
  probe.arm();
  await store.persist(m({ a: 2n }));
  const replace = (file: string) => [
    `open ${join(dir, file)}.tmp-*`,
    `write ${join(dir, file)}.tmp-*`,
    `fsync ${join(dir, file)}.tmp-*`,
    `rename ${join(dir, file)}`,
    // The directory held open since the start (the files went in through it); then, before the
    // write counts as durable, a check that the path still names it, where the next start reads.
    `fsync ${dir}`,
    `stat ${dir}`,
  ];
  // The directory is checked to be the one locked; then the snapshot first:
  // until the new log is in place, the old one is ignored as stale.
  const ops = probe.ops.map((op) => op.replace(/\.tmp-[0-9a-f]{12}$/, '.tmp-*'));
  assert.deepEqual(ops, [`stat ${dir}`, ...replace('marks.snapshot'), ...replace('marks.log'), `stat ${join(dir, 'marks.log')}`]);
  // Each temp file is named for its write alone, so two servers on one directory never share one.
  const temps = probe.ops.filter((op) => op.startsWith('open ') && op.includes('.tmp-'));
  assert.equal(new Set(temps).size, 2, temps.join('\n'));
  probe.arm();
  await store.persist(m({ a: 3n }));
  const again = probe.ops.filter((op) => op.startsWith('open ') && op.includes('.tmp-'));
  assert.ok(again.every((op) => !temps.includes(op)), 'a new name for every compaction');
});

for (const commits of COMMIT_MODES) {
  test(`a failure at any step of a write leaves loadable state with the old or new marks (${commits.name})`, async (t) => {
    for (const compactAfterBytes of [0, 1 << 20]) {
      // Count the file-system calls one write makes, then fail each in turn.
      const probe = faultAt(Number.MAX_SAFE_INTEGER);
      const log = join(await tempDir(t), 'marks.log');
      {
        const dir = dirname(log);
        const store = await FileStore.open(dir, { ...commits.opts, compactAfterBytes, beforeIo: probe.hook });
        await store.load();
        await store.persist(m({ a: 1n, b: 1n }));
        probe.arm();
        await store.persist(m({ a: 2n, c: 2n }));
        await store.close();
      }
      const steps = probe.ops.length;
      if (compactAfterBytes === 0) assert.ok(steps >= 8, probe.ops.join('\n'));
      else {
        // An append: its write, the sync unless the write was synchronous (O_DSYNC), and the check of the log's path.
        const append = commits.opts.syncedWrites ? ['write', 'stat'] : ['write', 'fdatasync', 'stat'];
        assert.deepEqual(probe.ops, append.map((op) => `${op} ${log}`));
      }
      for (let k = 0; k < steps; k++) {
        const dir = await tempDir(t);
        const fault = faultAt(k);
        const store = await FileStore.open(dir, { ...commits.opts, compactAfterBytes, beforeIo: fault.hook });
        await store.load();
        await store.persist(m({ a: 1n, b: 1n }));
        fault.arm();
        await assert.rejects(store.persist(m({ a: 2n, c: 2n })), PersistenceError, `step ${k}: ${fault.ops[k]}`);
        // Closing writes no marks, so what is on disk now is what a crash here would leave.
        await store.close();
        const after = await reload(dir);
        assert.ok(after.get('a') === 1n || after.get('a') === 2n, `step ${k}: a=${after.get('a')}`);
        assert.equal(after.get('b'), 1n);
        assert.ok(after.get('c') === undefined || after.get('c') === 2n);
        // And the store works from there.
        const again = await FileStore.open(dir, { ...commits.opts, compactAfterBytes });
        await again.load();
        await again.persist(m({ a: 5n }));
        await again.close();
        assert.deepEqual((await reload(dir)).get('a'), 5n, `step ${k}`);
      }
    }
  });
}

test('the log found at start is synced before anything is appended to it, torn or not', async (t) => {
  // What load() read may be a dead process's record still in the page cache only, and an
  // O_DSYNC append syncs nothing but its own bytes.
  for (const torn of [false, true]) {
    const dir = await tempDir(t);
    const { log } = paths(dir);
    {
      const { store } = await openLoaded(t, dir);
      await store.persist(m({ a: 1n }));
      await store.persist(m({ a: 2n }));
      await store.close();
    }
    if (torn) await appendFile(log, Buffer.from([0, 0, 0, 40, 1, 2]));
    const ops: string[] = [];
    const { store, marks } = await openLoaded(t, dir, { beforeIo: (op, path) => void ops.push(`${op} ${path}`) });
    assert.equal(marks.get('a'), 2n);
    assert.ok(ops.includes(`fdatasync ${log}`), `torn: ${torn}\n${ops.join('\n')}`);
    await store.close();
  }
});

for (const commits of COMMIT_MODES.filter((c) => c.opts.syncedWrites)) {
  test(`an O_DSYNC write that reaches the file and then reports EIO leaves loadable state, and the store recovers (${commits.name})`, async (t) => {
    const dir = await tempDir(t);
    const { log } = paths(dir);
    const { store } = await openLoaded(t, dir, commits.opts);
    await store.persist(m({ a: 1n }));
    await store.persist(m({ a: 3n }));
    const before = (await stat(log)).size;
    // The record lands in the file, then its sync fails: the write itself reports it.
    let failNext = false;
    const failIfNext = (fd: number) => {
      if (failNext && fdPath(fd) === log) {
        failNext = false;
        throw errno('EIO', 'write');
      }
    };
    const proto = await fileHandlePrototype();
    const originalWrite = proto.write;
    const originalWriteSync = fs.writeSync;
    proto.write = async function (this: { fd: number }, ...args: unknown[]) {
      const result = await originalWrite.apply(this, args);
      failIfNext(this.fd);
      return result;
    };
    fs.writeSync = ((fd: number, ...args: unknown[]) => {
      const result = (originalWriteSync as (...a: unknown[]) => number)(fd, ...args);
      failIfNext(fd);
      return result;
    }) as typeof fs.writeSync;
    t.after(() => {
      proto.write = originalWrite;
      fs.writeSync = originalWriteSync;
    });
    failNext = true;
    await assert.rejects(store.persist(m({ a: 4n })), { message: `write ${log}: EIO (i/o error)` });
    assert.equal(failNext, false, 'the failure was injected');
    const failed = await stat(log);
    assert.ok(failed.size > before, 'the failed record is in the file');
    // The log may end in a record the store never counted, and after a failed sync the
    // kernel's view of its pages is not to be trusted: the next write replaces it whole.
    await store.persist(m({ b: 5n }));
    assert.notEqual((await stat(log)).ino, failed.ino, 'the next write compacted into a new log');
    await store.persist(m({ a: 6n }));
    await store.close();
    const after = await reload(dir);
    assert.equal(after.get('a'), 6n);
    assert.equal(after.get('b'), 5n);
  });
}

for (const commits of COMMIT_MODES) {
  test(`a failed write is reported with its operation, path and errno, and the store recovers (${commits.name})`, async (t) => {
    const dir = await tempDir(t);
    const p = paths(dir);
    let fail: { op: string; code: keyof typeof constants.errno } | null = null;
    const { store } = await openLoaded(t, dir, {
      ...commits.opts,
      beforeIo: (op, path) => {
        if (op === fail?.op && path === p.log) {
          const { code } = fail;
          fail = null;
          throw errno(code, op);
        }
      },
    });
    await store.persist(m({ a: 1n }));
    fail = { op: 'write', code: 'ENOSPC' };
    await assert.rejects(store.persist(m({ a: 2n })), (err: unknown) => {
      assert.ok(err instanceof PersistenceError);
      assert.equal(err.message, `write ${p.log}: ENOSPC (no space left on device)`);
      return true;
    });
    await store.persist(m({ a: 3n }));
    // With O_DSYNC a disk that fails to store a record says so in the write; otherwise in the sync.
    const syncOp = commits.opts.syncedWrites ? 'write' : 'fdatasync';
    fail = { op: syncOp, code: 'EIO' };
    await assert.rejects(store.persist(m({ a: 4n })), { message: `${syncOp} ${p.log}: EIO (i/o error)` });
    await store.persist(m({ b: 5n }));
    await store.close();
    const after = await reload(dir);
    assert.equal(after.get('b'), 5n);
    // a=4 failed: a crash may keep it or not, and a clean reload shows one of the two.
    assert.ok(after.get('a') === 3n || after.get('a') === 4n);
  });
}

for (const commits of COMMIT_MODES) {
  test(`a data directory moved away fails writes, another one made in its place is not written, the original back resumes (${commits.name})`, async (t) => {
    const dir = await tempDir(t);
    const away = `${dir}.away`;
    t.after(() => rm(away, { recursive: true, force: true }));
    const { store } = await openLoaded(t, dir, commits.opts);
    await store.persist(m({ a: 1n, b: 2n }));
    await store.persist(m({ a: 3n }));
    await rename(dir, away);
    await assert.rejects(store.persist(m({ a: 4n })), (err: unknown) => {
      assert.ok(err instanceof PersistenceError);
      assert.match(err.message, /marks\.log: ENOENT \(no such file or directory\)/);
      return true;
    });
    await assert.rejects(store.persist(m({ a: 4n })), /ENOENT/);
    // A new directory at the path (rm -rf and mkdir, or the mount point of an
    // unmounted volume) has no LOCK, and would hide the real state when the volume returns.
    await mkdir(dir);
    await assert.rejects(store.persist(m({ a: 4n })), (err: unknown) => {
      assert.ok(err instanceof PersistenceError);
      assert.match(err.message, /is not the directory this server locked at start .*put that directory back/);
      return true;
    });
    assert.deepEqual(await readdir(dir), [], 'nothing written into the stranger');
    await rm(dir, { recursive: true });
    await rename(away, dir);
    await store.persist(m({ c: 6n }));
    await store.persist(m({ a: 7n }));
    await store.close();
    assert.deepEqual(await reload(dir), m({ a: 7n, b: 2n, c: 6n }));
  });
}

for (const file of ['marks.snapshot', 'marks.log']) {
  test(`a data directory replaced while a compaction installs its ${file} fails that write, keeps nothing in the stranger, and nothing is lost once it is back`, async (t) => {
    const dir = await tempDir(t);
    const away = `${dir}.away`;
    t.after(() => rm(away, { recursive: true, force: true }));
    let swap = false;
    // After the compaction checked the directory, before it writes the file: `mv dir dir.away; mkdir dir`.
    const beforeIo = (op: string, path: string) => {
      if (swap && op === 'open' && path.startsWith(join(dir, `${file}.tmp-`))) {
        swap = false;
        renameSync(dir, away);
        mkdirSync(dir);
      }
    };
    const { store } = await openLoaded(t, dir, { compactAfterBytes: 0, beforeIo });
    await store.persist(m({ a: 1n, b: 2n }));
    swap = true;
    await assert.rejects(store.persist(m({ a: 100n })), (err: unknown) => {
      assert.ok(err instanceof PersistenceError, String(err));
      assert.match(err.message, /is not the directory this server locked at start .*put that directory back/);
      return true;
    });
    assert.equal(swap, false, 'the directory was swapped');
    assert.deepEqual(await readdir(dir), [], 'nothing left in the stranger');
    // Until it is back, every write fails; then they succeed again, into it.
    await assert.rejects(store.persist(m({ a: 100n })), /is not the directory this server locked/);
    await rm(dir, { recursive: true });
    await rename(away, dir);
    await store.persist(m({ a: 200n }));
    await store.close();
    assert.deepEqual(await reload(dir), m({ a: 200n, b: 2n }));
  });
}

test('a data directory moved away while the server starts (after its lock, before its state is read) stops the start; nothing is lost once it is back', async (t) => {
  for (const replacement of [false, true]) {
    const dir = await tempDir(t);
    const away = `${dir}.away`;
    t.after(() => rm(away, { recursive: true, force: true }));
    {
      const { store } = await openLoaded(t, dir);
      await store.persist(m({ a: 5000n, b: 7n }));
      await store.close();
    }
    let moved = false;
    const beforeIo = (op: string, path: string) => {
      if (!moved && op === 'read' && path === paths(dir).snapshot) {
        moved = true;
        renameSync(dir, away);
        // With an empty directory in its place (`rm -rf` and `mkdir`), or nothing there.
        if (replacement) mkdirSync(dir);
      }
    };
    const store = await FileStore.open(dir, { beforeIo });
    t.after(() => store.close());
    await assert.rejects(store.load(), (err: unknown) => {
      assert.ok(err instanceof PersistenceError, String(err));
      // Replaced: not ours; gone: not there at all.
      assert.match(err.message, replacement ? /is not the directory this server locked at start/ : new RegExp(`^stat ${dir}: ENOENT`));
      return true;
    });
    assert.ok(moved);
    await store.close();
    if (replacement) assert.deepEqual(await readdir(dir), [], 'nothing written into the replacement');
    await rm(dir, { recursive: true, force: true });
    await rename(away, dir);
    assert.deepEqual(await reload(dir), m({ a: 5000n, b: 7n }));
  }
});

test('a directory swapped in and out at the path during a compaction never receives its files, and nothing acknowledged is lost', async (t) => {
  // At each listed step of a compaction, the path is made to name the other directory.
  const schedules: Array<Array<[op: string, file: string]>> = [
    [['open', 'marks.snapshot.tmp-'], ['rename', 'marks.snapshot'], ['fsync', '']],
    [['open', 'marks.snapshot.tmp-'], ['open', ''], ['fsync', '']],
    [['open', 'marks.snapshot.tmp-'], ['fsync', '']],
    [['rename', 'marks.log'], ['stat', '']],
    [['open', 'marks.log.tmp-'], ['rename', 'marks.log']],
  ];
  for (const schedule of schedules) {
    const dir = await tempDir(t);
    const away = `${dir}.away`;
    const stranger = `${dir}.stranger`;
    t.after(() => Promise.all([rm(away, { recursive: true, force: true }), rm(stranger, { recursive: true, force: true })]));
    await mkdir(stranger);
    const at = { path: 'ours' as 'ours' | 'stranger' };
    const toggle = () => {
      if (at.path === 'ours') {
        renameSync(dir, away);
        renameSync(stranger, dir);
        at.path = 'stranger';
      } else {
        renameSync(dir, stranger);
        renameSync(away, dir);
        at.path = 'ours';
      }
    };
    const steps = [...schedule];
    let armed = false;
    const beforeIo = (op: string, path: string) => {
      const next = steps[0];
      if (armed && next !== undefined && op === next[0] && path.startsWith(join(dir, next[1])) && (next[1] !== '' || path === dir)) {
        steps.shift();
        toggle();
      }
    };
    const store = await FileStore.open(dir, { compactAfterBytes: 0, beforeIo });
    await store.load();
    const acknowledged = new Map<string, bigint>();
    const persist = async (marks: Map<string, bigint>) => {
      await store.persist(marks);
      for (const [k, v] of marks) acknowledged.set(k, v);
    };
    await persist(m({ a: 1n, b: 2n }));
    armed = true;
    const outcome = await persist(m({ a: 1000n })).then(() => 'acknowledged', (err: Error) => err.message);
    armed = false;
    const what = `${schedule.map(([op, file]) => `${op} ${file}`).join(', ')}: ${outcome}`;
    // Steps a store does not take (it syncs a directory it holds open, say) leave swaps undone.
    assert.ok(steps.length < schedule.length, `the first swap happened (${what})`);
    if (at.path === 'stranger') toggle();
    assert.deepEqual(await readdir(stranger), [], `nothing in the other directory (${what})`);
    // Back in place, the store goes on; a later start finds at least everything acknowledged.
    await persist(m({ c: 5n }));
    await store.close();
    const loaded = await reload(dir);
    for (const [name, mark] of acknowledged) assert.ok((loaded.get(name) ?? 0n) >= mark, `${name}: ${loaded.get(name)} < ${mark} (${what})`);
  }
});

for (const commits of COMMIT_MODES) {
  test(`a log replaced by a directory fails writes until it is removed (${commits.name})`, async (t) => {
    const dir = await tempDir(t);
    const p = paths(dir);
    const { store } = await openLoaded(t, dir, commits.opts);
    await store.persist(m({ a: 1n }));
    await unlink(p.log);
    await mkdir(p.log);
    await assert.rejects(store.persist(m({ a: 2n })), /replaced behind the server's back/);
    await assert.rejects(store.persist(m({ a: 2n })), { message: `rename ${p.log}: EISDIR (illegal operation on a directory)` });
    await rm(p.log, { recursive: true });
    await store.persist(m({ a: 3n }));
    await store.close();
    assert.deepEqual(await reload(dir), m({ a: 3n }));
  });
}

test('a lock held by a live process refuses, naming the directory and the pid', async (t) => {
  const dir = await tempDir(t);
  const pid = livePid(t);
  const held = lockJson(pid);
  await writeFile(paths(dir).lock, held);
  await assert.rejects(FileStore.open(dir), (err: unknown) => {
    assert.ok(err instanceof DataDirLockedError);
    assert.equal(err.dir, dir);
    assert.ok(err.message.includes(dir) && err.message.includes(`pid ${pid}`), err.message);
    return true;
  });
  assert.equal(await readFile(paths(dir).lock, 'utf8'), held, 'the holder keeps its lock');
});

test('a second store on the same directory in this process is refused until the first closes', async (t) => {
  const dir = await tempDir(t);
  const first = await FileStore.open(dir);
  await assert.rejects(FileStore.open(dir), /this very process/);
  await first.close();
  const second = await FileStore.open(dir);
  await second.close();
  // Two opens at once: exactly one gets the directory (on Linux the socket mutex would
  // catch the second anyway; the in-process claim must not rely on it).
  const both = await Promise.allSettled([FileStore.open(dir), FileStore.open(dir)]);
  const opened = both.filter((r) => r.status === 'fulfilled');
  assert.equal(opened.length, 1, 'one of two concurrent opens');
  assert.match(String((both.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason), /this very process/);
  await (opened[0] as PromiseFulfilledResult<FileStore>).value.close();
});

test('a stale lock from a dead process is taken over and logged', async (t) => {
  const dir = await tempDir(t);
  const p = paths(dir);
  const pid = await deadPid();
  await writeFile(p.lock, lockJson(pid));
  const logs: string[] = [];
  const store = await FileStore.open(dir, { log: (msg) => logs.push(msg) });
  assert.equal(JSON.parse(await readFile(p.lock, 'utf8')).pid, process.pid);
  assert.ok(logs.some((l) => l.includes('stale lock')));
  await store.close();
  await assert.rejects(stat(p.lock), { code: 'ENOENT' });
});

test('a stale lock whose takeover loses its temp file (a rival cleared it) is looked at again, not an I/O error', async (t) => {
  const dir = await tempDir(t);
  const p = paths(dir);
  await writeFile(p.lock, lockJson(await deadPid()));
  let lost = false;
  const beforeIo = (op: string, path: string) => {
    if (op === 'rename' && path === p.lock && !lost) {
      lost = true;
      throw errno('ENOENT', op);
    }
  };
  const store = await FileStore.open(dir, { beforeIo });
  assert.ok(lost);
  assert.equal(JSON.parse(await readFile(p.lock, 'utf8')).pid, process.pid);
  await store.close();
});

test('a lock whose holder was killed but not yet reaped (a zombie) is taken over', async (t) => {
  const dir = await tempDir(t);
  // The shell starts the holder, then becomes a `sleep` that never collects it. The holder is
  // killed only once the shell is gone: a shell still running would reap it at once.
  const parent = spawn('sh', ['-c', 'sleep 60 & exec sleep 60'], { stdio: 'ignore' });
  t.after(() => parent.kill('SIGKILL'));
  const holder = (): number | null => {
    try {
      if (readFileSync(`/proc/${parent.pid}/comm`, 'utf8').trim() !== 'sleep') return null;
      return Number(readFileSync(`/proc/${parent.pid}/task/${parent.pid}/children`, 'utf8').trim()) || null;
    } catch {
      return null;
    }
  };
  await waitFor(() => holder() !== null, 'the shell to start the holder and become sleep');
  const pid = holder()!;
  process.kill(pid, 'SIGKILL');
  await waitFor(() => isZombie(pid), `pid ${pid} to become a zombie`);
  // What made the lock look held: the zombie still answers signal 0.
  assert.doesNotThrow(() => process.kill(pid, 0));
  await writeFile(paths(dir).lock, lockJson(pid));
  const logs: string[] = [];
  const store = await FileStore.open(dir, { log: (msg) => logs.push(msg) });
  assert.equal(JSON.parse(await readFile(paths(dir).lock, 'utf8')).pid, process.pid);
  assert.ok(logs.some((l) => l.includes('stale lock')));
  await store.close();
});

test('a process whose main thread has exited while another thread runs (Zl in ps) is not taken for a zombie', async (t) => {
  // A /proc of our own: making such a process for real needs a thread library call Node.js does not offer.
  const proc = await tempDir(t);
  const fake = async (pid: number, state: string, threads: number) => {
    await mkdir(join(proc, String(pid), 'task'), { recursive: true });
    await writeFile(join(proc, String(pid), 'stat'), `${pid} (dolmeangi (x)) ${state} 1 ${pid} ${pid} 0 -1\n`);
    for (let i = 0; i < threads; i++) await mkdir(join(proc, String(pid), 'task', String(pid + i)));
  };
  await fake(100, 'Z', 1);
  await fake(200, 'Z', 2);
  await fake(300, 'S', 1);
  assert.equal(isZombie(100, proc), true, 'exited, waiting to be reaped');
  assert.equal(isZombie(200, proc), false, 'one thread still runs: its writes may still land');
  assert.equal(isZombie(300, proc), false, 'running');
  assert.equal(isZombie(400, proc), false, 'no such process');
});

/** The store module, for scripts run in a child process. */
const STORE_MODULE = new URL('../../src/store/file.ts', import.meta.url).href;

/**
 * Runs `script` (module source; `STORE` names the store module) in another Node
 * process, killed when the test ends, and resolves once what it printed satisfies
 * `until`. Returns the process and everything it printed so far.
 */
async function runScript(t: TestContext, script: string, until: (out: string) => boolean, what: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `const STORE = ${JSON.stringify(STORE_MODULE)};\n${script}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not within 20 s`)), 20_000);
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (!until(out)) return;
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => reject(new Error(`${what}: the script exited with ${code}`)));
  });
  return { child, out: () => out };
}

test('a LOCK that names a dead pid does not let a second server in while the first runs (no takeover race)', { skip: process.platform !== 'linux' && 'the machine-wide mutex is Linux only' }, async (t) => {
  const dir = await tempDir(t);
  const script = `
    const { FileStore } = await import(STORE);
    const s = await FileStore.open(${JSON.stringify(dir)});
    await s.load();
    process.stdout.write('ready\\n');
    setInterval(() => {}, 1000);`;
  const { child: holder } = await runScript(t, script, (out) => out.includes('ready'), 'the holder opening the store');
  // The mutex's name fills sun_path, so that every Node version binds the same address.
  const id = await stat(dir, { bigint: true });
  const bound = (await readFile('/proc/net/unix', 'utf8')).split('\n').map((l) => l.split(' ').at(-1)!);
  const name = bound.find((n) => n.startsWith(`@dolmeangi-data-dir-${id.dev}-${id.ino}_`));
  assert.ok(name, 'the holder binds the abstract socket named after the directory');
  assert.equal(name.length, 108, name);
  // What a rival that lost a takeover race would see: LOCK rewritten with a pid that is gone.
  const dead = await deadPid();
  await writeFile(paths(dir).lock, lockJson(dead));
  await assert.rejects(FileStore.open(dir), (err: unknown) => {
    assert.ok(err instanceof DataDirLockedError, String(err));
    // Not the dead pid from LOCK: that would send the operator after a process that is gone.
    assert.doesNotMatch(err.message, new RegExp(`pid ${dead}\\b`));
    assert.match(err.message, /a process on this machine; find it with: ss -xlp/);
    return true;
  });
  // kill -9 leaves LOCK behind, but the kernel drops the holder's claim with it.
  holder.kill('SIGKILL');
  await once(holder, 'exit');
  const { marks } = await openLoaded(t, dir);
  assert.deepEqual(marks, new Map());
});

test('a failed accept on the machine mutex is logged, not thrown', { skip: process.platform !== 'linux' && 'the machine-wide mutex is Linux only' }, async (t) => {
  const dir = await tempDir(t);
  const said: string[] = [];
  const store = await FileStore.open(dir, { log: (msg, fields) => said.push(`${msg} ${JSON.stringify(fields)}`) });
  t.after(() => store.close());
  // Any process on the machine may connect to the mutex's name; out of descriptors, each accept fails like this.
  const { mutex } = store as unknown as { mutex: import('node:net').Server };
  for (let i = 0; i < 50; i++) mutex.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }));
  // A flood of them is one line, not fifty; the rest are counted in the next, at the latest when the store closes.
  const counts = () =>
    said
      .filter((msg) => msg.startsWith('the data directory mutex could not accept a connection '))
      .map((msg) => JSON.parse(msg.slice(msg.indexOf('{'))) as { error: string; count: number })
      .filter((fields) => fields.error === 'accept EMFILE')
      .map((fields) => fields.count);
  assert.deepEqual(counts(), [1], said.join('\n'));
  await store.load();
  await store.persist(m({ a: 1n }));
  await store.close();
  assert.deepEqual(counts(), [1, 49], said.join('\n'));
});

/** Holds an exclusive flock on `dir` from another process, as another server would, until the returned function ends it. */
async function holdFlock(t: TestContext, dir: string): Promise<() => Promise<void>> {
  const holder = spawn('flock', ['--exclusive', '--close', dir, 'sh', '-c', 'echo held && exec cat >/dev/null'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(holder, 'exit');
  const end = async (): Promise<void> => {
    holder.stdin.end();
    await exited;
  };
  t.after(end);
  await once(holder.stdout, 'data');
  return end;
}

test('a flock on the directory keeps a second server out though LOCK names a dead pid and the mutex is free (a server in another container)', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  const dir = await tempDir(t);
  // What a server in another container leaves visible here: its flock, and a LOCK whose pid means nothing in this PID namespace.
  const end = await holdFlock(t, dir);
  await writeFile(paths(dir).lock, lockJson(await deadPid()));
  await assert.rejects(FileStore.open(dir), (err: unknown) => {
    assert.ok(err instanceof DataDirLockedError, String(err));
    assert.match(err.message, /a process holds a flock on it, perhaps a server in another container sharing the volume; `lsof .*` run where that server runs lists/);
    return true;
  });
  assert.equal(JSON.parse(await readFile(paths(dir).lock, 'utf8')).host, hostname(), 'LOCK left as it was');
  // That server gone, the directory is free.
  await end();
  const said: string[] = [];
  const { marks } = await openLoaded(t, dir, { log: (msg) => said.push(msg) });
  assert.deepEqual(marks, new Map());
  assert.ok(said.some((msg) => /took over a stale lock/.test(msg)), said.join('\n'));
});

test('the flock is the store\'s own descriptor: held while open with no process of its own, not passed to children, released at close', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  const dir = await tempDir(t);
  const flocksBefore = await childrenRunning('flock');
  const store = await FileStore.open(dir);
  assert.equal(await flockHeld(dir), true, 'held while open');
  // Nothing that could die, or be signalled by a Ctrl-C or a service manager, while the store still writes.
  assert.deepEqual(await childrenRunning('flock'), flocksBefore, 'no flock process left running');
  await store.load();
  await store.persist(m({ a: 10n }));
  // A child started now (a hook, a shell) must not keep the directory locked after the store lets go.
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  await once(child, 'spawn');
  await store.close();
  assert.equal(await flockHeld(dir), false, 'released by close, before it resolves, though a child started while it was held still runs');
  assert.equal(child.exitCode, null, 'the child still runs');

  const again = await FileStore.open(dir);
  t.after(() => again.close());
  assert.equal(await flockHeld(dir), true, 'taken again');
  assert.deepEqual(await again.load(), m({ a: 10n }));
  await again.persist(m({ a: 15n }));
  await again.close();
  assert.deepEqual(await reload(dir), m({ a: 15n }));
});

test('temp files left by a compaction or a lock cut short are removed at start, and nothing else', async (t) => {
  const dir = await tempDir(t);
  {
    const { store } = await openLoaded(t, dir, { compactAfterBytes: 0 });
    await store.persist(m({ a: 7n }));
    await store.close();
  }
  const left = ['marks.snapshot.tmp-0123456789ab', 'marks.log.tmp-ba9876543210', 'marks.snapshot.tmp', 'marks.log.tmp'];
  const kept = ['marks.snapshot.bak', 'notes.tmp', 'marks.snapshotXtmp-1', 'LOCK.1234'];
  for (const name of [...left, 'LOCK.tmp-0123456789ab', ...kept]) await writeFile(join(dir, name), 'partial');
  const said: string[] = [];
  const { marks } = await openLoaded(t, dir, { log: (msg, fields) => said.push(`${msg} ${JSON.stringify(fields)}`) });
  assert.deepEqual(marks, m({ a: 7n }));
  assert.deepEqual((await readdir(dir)).sort(), ['LOCK', 'marks.log', 'marks.snapshot', ...kept].sort());
  assert.equal(said.filter((msg) => /removed the temp file of an interrupted compaction/.test(msg)).length, left.length, said.join('\n'));
  assert.equal(said.filter((msg) => /removed the temp file of an interrupted start or lock takeover .*LOCK\.tmp-0123456789ab/.test(msg)).length, 1, said.join('\n'));
});

/** Opens a store with PATH set to `path` while it takes its locks (which commands it finds), and what it logged. */
async function openWithPath(t: TestContext, dir: string, path: string): Promise<{ store: FileStore; said: string[] }> {
  const said: string[] = [];
  const before = process.env.PATH;
  process.env.PATH = path;
  let store: FileStore;
  try {
    store = await FileStore.open(dir, { log: (msg, fields) => said.push(`${msg} ${JSON.stringify(fields)}`) });
  } finally {
    process.env.PATH = before;
  }
  t.after(() => store.close());
  return { store, said };
}

test('without a flock command the store still opens, and says what is not covered', async (t) => {
  const dir = await tempDir(t);
  const { store, said } = await openWithPath(t, dir, dir);
  assert.ok(said.some((msg) => /no flock on the data directory.*no flock command/.test(msg)), said.join('\n'));
  await store.load();
});

test('a flock command that exits 0 without locking is caught, and the store says the flock is missing', async (t) => {
  const dir = await tempDir(t);
  const bin = await tempDir(t);
  // Another implementation, or a wrapper, that ignores the descriptor it is given.
  await writeFile(join(bin, 'flock'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  const { said } = await openWithPath(t, dir, bin);
  assert.ok(said.some((msg) => /no flock on the data directory.*reported the lock taken, but the directory was not locked/.test(msg)), said.join('\n'));
});

test('a lock taken but not checkable from outside is kept, and the store says so', async (t) => {
  const dir = await tempDir(t);
  const bin = await tempDir(t);
  const real = execFileSync('sh', ['-c', 'command -v flock'], { encoding: 'utf8' }).trim();
  // Locks the descriptor it is given, as flock does, but fails the look through the path.
  await writeFile(join(bin, 'flock'), `#!/bin/sh\nfor last; do :; done\n[ "$last" = 3 ] && exec ${real} "$@"\necho "cannot look" >&2\nexit 1\n`, { mode: 0o755 });
  const { said } = await openWithPath(t, dir, `${bin}:${process.env.PATH}`);
  assert.equal(await flockHeld(dir), true, 'the lock flock took is kept');
  assert.ok(said.some((msg) => /took the flock on the data directory, but could not check it from outside.*cannot look/.test(msg)), said.join('\n'));
});

test('a lock naming this pid that this process does not hold is stale (a restarted container)', async (t) => {
  const dir = await tempDir(t);
  await writeFile(paths(dir).lock, lockJson(process.pid));
  const store = await FileStore.open(dir);
  await store.close();
});

test('an unreadable lock or one from another host refuses, saying to delete it', async (t) => {
  // A pid dead here proves nothing about another host's process (a shared volume).
  const elsewhere = lockJson(await deadPid(), `not-${hostname()}`);
  for (const text of ['', '{"pid":', '{"pid":-3,"host":"x"}', lockJson(1, `not-${hostname()}`), elsewhere]) {
    const dir = await tempDir(t);
    await writeFile(paths(dir).lock, text);
    await assert.rejects(FileStore.open(dir), (err: unknown) => {
      assert.ok(err instanceof DataDirLockedError);
      assert.ok(err.message.includes(`delete ${paths(dir).lock}`), err.message);
      if (text === '') assert.match(err.message, /its lock file is empty;/);
      if (text === elsewhere) assert.match(err.message, new RegExp(`on host not-${hostname()}`));
      return true;
    });
    assert.equal(await readFile(paths(dir).lock, 'utf8'), text, 'LOCK left as it was');
  }
});

test('LOCK comes into being whole: written and synced under a temp name, then linked, so a kill at any point never leaves it empty', async (t) => {
  const dir = await tempDir(t);
  await mkdir(dir, { recursive: true });
  const probe = faultAt(Number.MAX_SAFE_INTEGER);
  probe.arm();
  const store = await FileStore.open(dir, { beforeIo: probe.hook });
  t.after(() => store.close());
  const all = probe.ops.map((op) => op.replace(/\.tmp-[0-9a-f]{12}$/, '.tmp-*'));
  const lock = paths(dir).lock;
  assert.deepEqual(all.filter((op) => op.includes('LOCK')), [`open ${lock}.tmp-*`, `write ${lock}.tmp-*`, `fsync ${lock}.tmp-*`, `link ${lock}`]);
  const first = all.indexOf(`open ${lock}.tmp-*`);
  assert.equal(JSON.parse(await readFile(lock, 'utf8')).pid, process.pid);
  assert.deepEqual((await readdir(dir)).filter((name) => name.startsWith('LOCK')), ['LOCK'], 'the temp name is gone');
  // Stopped before the link (a kill there): no LOCK, and the next start takes the directory.
  await store.close();
  for (let step = 0; step < 4; step++) {
    const failing = faultAt(first + step);
    failing.arm();
    await assert.rejects(FileStore.open(dir, { beforeIo: failing.hook }), PersistenceError);
    assert.equal(failing.ops.at(-1)!.replace(/\.tmp-[0-9a-f]{12}$/, '.tmp-*'), all[first + step], 'failed where meant');
    await assert.rejects(stat(lock), { code: 'ENOENT' }, `stopped at ${all[first + step]}`);
  }
  const next = await FileStore.open(dir);
  await next.close();
});

test('LOCK on a file system without hard links is created in place; a temp name removed before the link is tried again', async (t) => {
  for (const code of ['EPERM', 'ENOTSUP', 'ENOENT'] as const) {
    const dir = await tempDir(t);
    await mkdir(dir, { recursive: true });
    const ops: string[] = [];
    let failed = false;
    const beforeIo = (op: string, path: string) => {
      ops.push(`${op} ${path.replace(/\.tmp-[0-9a-f]{12}$/, '.tmp-*')}`);
      if (op === 'link' && !failed) {
        failed = true;
        throw errno(code, op);
      }
    };
    const store = await FileStore.open(dir, { beforeIo });
    const lock = paths(dir).lock;
    assert.equal(JSON.parse(await readFile(lock, 'utf8')).pid, process.pid, code);
    const after = ops.slice(ops.indexOf(`link ${lock}`) + 1).filter((op) => op.includes('LOCK'));
    // ENOENT: the temp file went (a starting rival cleared it), so a new one is linked; otherwise LOCK is made in place.
    const expected = code === 'ENOENT' ? [`open ${lock}.tmp-*`, `write ${lock}.tmp-*`, `fsync ${lock}.tmp-*`, `link ${lock}`] : [`open ${lock}`, `write ${lock}`, `fsync ${lock}`];
    assert.deepEqual(after, expected, code);
    assert.deepEqual((await readdir(dir)).filter((name) => name.startsWith('LOCK')), ['LOCK'], `${code}: no temp name left`);
    await store.close();
  }
});

test('close is idempotent, releases the lock, and later persists reject', async (t) => {
  const dir = await tempDir(t);
  const store = await FileStore.open(dir);
  await store.load();
  await store.persist(m({ a: 1n }));
  await Promise.all([store.close(), store.close()]);
  await store.close();
  await assert.rejects(stat(paths(dir).lock), { code: 'ENOENT' });
  await assert.rejects(store.persist(m({ a: 2n })), PersistenceError);
  assert.deepEqual(await reload(dir), m({ a: 1n }));
});

test('a data directory it creates, and each parent it creates on the way, is synced into its parent', async (t) => {
  const root = await tempDir(t);
  const dir = join(root, 'a', 'b');
  const synced: string[] = [];
  const store = await FileStore.open(dir, { beforeIo: (op, path) => void (op === 'fsync' && synced.push(path)) });
  t.after(() => store.close());
  // A directory survives a machine crash once the directory naming it is synced.
  for (const parent of [root, join(root, 'a')]) assert.ok(synced.includes(parent), `${parent} synced: ${synced.join(', ')}`);
});

test('a compaction closes the log it replaces: descriptors on the data directory stay as many', { skip: process.platform !== 'linux' && '/proc is Linux only' }, async (t) => {
  const dir = await tempDir(t);
  const { store } = await openLoaded(t, dir, { compactAfterBytes: 0 });
  // A replaced log still open shows as `<dir>/marks.log (deleted)`.
  const open = (): string[] => descriptorsOn((target) => target === dir || target.startsWith(`${dir}/`)).map(fdPath);
  await store.persist(m({ a: 1n }));
  const before = open();
  for (let i = 2n; i <= 6n; i++) await store.persist(m({ a: i }));
  assert.deepEqual(open().sort(), before.sort());
});

test("close leaves a LOCK that is not its own (the directory replaced meanwhile): it is another server's", async (t) => {
  const dir = await tempDir(t);
  const store = await FileStore.open(dir);
  await store.load();
  const other = lockJson(await deadPid());
  await writeFile(paths(dir).lock, other);
  await store.close();
  assert.equal(await readFile(paths(dir).lock, 'utf8'), other);
});

test('close waits for the persist in flight', async (t) => {
  const dir = await tempDir(t);
  const store = await FileStore.open(dir);
  await store.load();
  const write = store.persist(m({ a: 1n }));
  await store.close();
  await write;
  assert.deepEqual(await reload(dir), m({ a: 1n }));
});

test('misuse is refused: persist before load, or two persists at once', async (t) => {
  const dir = await tempDir(t);
  const store = await FileStore.open(dir);
  t.after(() => store.close());
  await assert.rejects(store.persist(m({ a: 1n })), /before load/);
  await store.load();
  const first = store.persist(m({ a: 1n }));
  await assert.rejects(store.persist(m({ a: 2n })), /in flight/);
  await first;
});

for (const commits of COMMIT_MODES) {
  test(`property: any persists, reopens and compaction threshold reload to the last mark of each name (${commits.name})`, async (t) => {
    const root = await tempDir(t);
    let run = 0;
    const name = fc.constantFrom('a', 'b', 'c', 'd.e', 'f:g-h_1');
    const mark = fc.oneof(fc.bigInt({ min: 0n, max: END }), fc.constantFrom(0n, END, MAX_VALUE, 2n ** 53n + 1n));
    const step = fc.record({
      batch: fc.uniqueArray(fc.tuple(name, mark), { minLength: 1, maxLength: 5, selector: ([n]) => n }),
      reopen: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 25 }), fc.integer({ min: 0, max: 400 }), async (steps, compactAfterBytes) => {
        const dir = join(root, String(run++));
        const expected = new Map<string, bigint>();
        let store = await FileStore.open(dir, { ...commits.opts, compactAfterBytes });
        await store.load();
        try {
          for (const { batch, reopen } of steps) {
            if (reopen) {
              await store.close();
              store = await FileStore.open(dir, { ...commits.opts, compactAfterBytes });
              assert.deepEqual(await store.load(), expected);
            }
            await store.persist(new Map(batch));
            for (const [n, v] of batch) expected.set(n, v);
          }
        } finally {
          await store.close();
        }
        assert.deepEqual(await reload(dir), expected);
        await rm(dir, { recursive: true, force: true });
      }),
      { numRuns: 60 },
    );
  });
}

for (const commits of COMMIT_MODES) {
  test(`kill -9 in the middle of writes: a restart loads at least every acknowledged mark (${commits.name})`, async (t) => {
    const dir = await tempDir(t);
    // Prints each mark after its persist resolved; compacts often so kills land in compactions too.
    const script = `
      const { FileStore } = await import(STORE);
      const s = await FileStore.open(${JSON.stringify(dir)}, { compactAfterBytes: 2000, blockingCommits: ${commits.opts.blockingCommits} });
      await s.load();
      for (let i = 1n; ; i++) {
        await s.persist(new Map([['a', i], ['b' + (i % 50n), i]]));
        process.stdout.write(i + '\\n');
      }`;
    const { child, out } = await runScript(t, script, (text) => text.split('\n').length > 300, 'the writer acknowledging 300 marks');
    child.kill('SIGKILL');
    await once(child, 'exit');
    const acked = BigInt(out().trim().split('\n').at(-1)!);
    const logs: string[] = [];
    const after = await reload(dir, { log: (msg) => logs.push(msg) });
    assert.ok(after.get('a')! >= acked, `a=${after.get('a')} acknowledged ${acked}`);
    assert.ok(logs.some((l) => l.includes('stale lock')));
  });
}
