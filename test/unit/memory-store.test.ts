import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { END } from '../../src/core/limits.js';
import { MemoryStore } from '../../src/store/memory.js';
import { FencedError, PersistenceError, StateCorruptError } from '../../src/errors.js';

const m = (entries: Record<string, bigint>) => new Map(Object.entries(entries));

test('persists merge into what load returns, and calls are counted', async () => {
  const store = new MemoryStore({ initial: [['a', 1n]] });
  assert.deepEqual(await store.load(), m({ a: 1n }));
  await store.persist(m({ a: 5n, b: 2n }));
  await store.persist(m({ b: 3n }));
  assert.deepEqual(await store.load(), m({ a: 5n, b: 3n }));
  await store.close();
  assert.deepEqual(store.calls, { load: 2, persist: 2, persisted: 2, failed: 0, close: 1, maxInFlight: 1 });
});

test('a mark outside 0..2^63 is refused, as the file and etcd stores refuse it, and nothing is stored', async () => {
  const store = new MemoryStore({ initial: [['a', 5n]] });
  await assert.rejects(store.persist(new Map([['a', 6n], ['b', END + 1n]])), RangeError);
  await assert.rejects(store.persist(new Map([['a', -1n]])), RangeError);
  assert.equal(store.calls.failed, 2, 'counted as failed writes, as the core sees them');
  assert.deepEqual(await store.load(), new Map([['a', 5n]]));
});

test('the caller may change its map after persist without changing the store', async () => {
  const store = new MemoryStore();
  const batch = new Map([['a', 1n]]);
  const write = store.persist(batch);
  batch.set('a', 99n);
  await write;
  assert.deepEqual(store.state(), m({ a: 1n }));
});

test('failNext rejects that many persists, landed or not', async () => {
  const store = new MemoryStore();
  store.failNext(2);
  await assert.rejects(store.persist(m({ a: 1n })), PersistenceError);
  await assert.rejects(store.persist(m({ a: 2n })), PersistenceError);
  assert.deepEqual(store.state(), new Map());
  store.failNext(1, { landed: true, error: () => new PersistenceError('fsync: EIO') });
  await assert.rejects(store.persist(m({ a: 3n })), /fsync: EIO/);
  assert.deepEqual(store.state(), m({ a: 3n }));
  await store.persist(m({ a: 4n }));
  assert.equal(store.calls.failed, 3);
  assert.equal(store.calls.persisted, 1);
});

test('fence makes every later persist reject with FencedError', async () => {
  const store = new MemoryStore();
  store.fence('node-2 leads');
  for (let i = 0; i < 2; i++) {
    await assert.rejects(store.persist(m({ a: 1n })), (err: unknown) => err instanceof FencedError && err.code === 'FENCED');
  }
});

test('pause holds persists in flight until resume', async () => {
  const store = new MemoryStore();
  store.pause();
  let done = false;
  const write = store.persist(m({ a: 1n })).then(() => (done = true));
  await tick();
  assert.equal(done, false);
  assert.deepEqual(store.pending(), [m({ a: 1n })]);
  assert.deepEqual(store.state(), new Map());
  store.resume();
  await write;
  assert.deepEqual(store.state(), m({ a: 1n }));
  assert.deepEqual(store.pending(), []);
});

test('a custom delay sees each batch', async () => {
  const seen: number[] = [];
  const store = new MemoryStore({ delay: async (marks) => void seen.push(marks.size) });
  await store.persist(m({ a: 1n, b: 2n }));
  assert.deepEqual(seen, [2]);
});

test('overlapping persists are counted, so tests can check the one-in-flight rule', async () => {
  const store = new MemoryStore();
  store.pause();
  const writes = [store.persist(m({ a: 1n })), store.persist(m({ b: 1n }))];
  store.resume();
  await Promise.all(writes);
  assert.equal(store.calls.maxInFlight, 2);
});

test('crash keeps acknowledged writes; the one in flight is lost or landed as asked', async () => {
  for (const inFlight of ['lost', 'landed'] as const) {
    const store = new MemoryStore();
    await store.persist(m({ a: 1n }));
    store.pause();
    const write = store.persist(m({ a: 2n, b: 2n }));
    await tick();
    const after = store.crash({ inFlight });
    assert.deepEqual(after, inFlight === 'lost' ? m({ a: 1n }) : m({ a: 2n, b: 2n }));
    await assert.rejects(write, /crashed/);
    await assert.rejects(store.persist(m({ a: 3n })), PersistenceError);
    // A restart loads what the crash left.
    assert.deepEqual(await new MemoryStore({ initial: after }).load(), after);
  }
});

test('loadError makes load reject, as a corrupt state file does', async () => {
  const store = new MemoryStore({ loadError: new StateCorruptError('/data/marks.log', 'checksum mismatch') });
  await assert.rejects(store.load(), StateCorruptError);
});
