import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SequenceAllocator, type BatchSource } from '../../src/client/allocator.js';
import type { Batch } from '../../src/client/client.js';
import { ServerError } from '../../src/client/errors.js';
import { invalidCountMessage } from '../../src/protocol/refusals.js';

/** Issues ranges like a server would; each fetch waits until the test releases it (or not, with `auto`). */
class FakeSource implements BatchSource {
  next = 1n;
  readonly requests: Array<{ count: bigint; name: string | undefined }> = [];
  inFlight = 0;
  maxInFlight = 0;
  failNext: Error | null = null;
  /** A server's --max-batch: larger counts are refused as the server refuses them. */
  maxBatch: bigint | null = null;
  private held: Array<() => void> = [];

  constructor(private readonly auto = true) {}

  getBatch(count: bigint, name?: string): Promise<Batch> {
    this.requests.push({ count, name });
    if (this.maxBatch !== null && count > this.maxBatch) {
      return Promise.reject(new ServerError('ERR', invalidCountMessage(String(count), this.maxBatch)));
    }
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise<Batch>((resolve, reject) => {
      const settle = (): void => {
        this.inFlight--;
        if (this.failNext !== null) {
          const e = this.failNext;
          this.failNext = null;
          reject(e);
          return;
        }
        const first = this.next;
        this.next += count;
        resolve({ first, count });
      };
      if (this.auto) queueMicrotask(settle);
      else this.held.push(settle);
    });
  }

  /** Lets the oldest held fetch complete. */
  release(): void {
    const settle = this.held.shift();
    assert.ok(settle, 'no fetch is waiting');
    settle();
  }

  get waiting(): number {
    return this.held.length;
  }
}

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('numbers are distinct and increasing, with one fetch per batch', async () => {
  const source = new FakeSource();
  const allocator = new SequenceAllocator(source, { batch: 1000, name: 'orders' });
  let last = 0n;
  for (let i = 0; i < 100_000; i++) {
    const n = await allocator.next();
    assert.ok(n > last, `${n} after ${last}`);
    last = n;
  }
  assert.equal(last, 100_000n);
  assert.ok(source.requests.length <= 101, `${source.requests.length} fetches`);
  assert.ok(source.requests.every((r) => r.name === 'orders' && r.count === 1000n));
});

test('tryNext is undefined until the first range arrives, and starts that fetch', async () => {
  const source = new FakeSource(false);
  const allocator = new SequenceAllocator(source, { batch: 10 });
  assert.equal(allocator.tryNext(), undefined);
  assert.equal(allocator.tryNext(), undefined);
  assert.equal(source.requests.length, 1, 'one fetch, however often it is asked');
  source.release();
  await flush();
  assert.equal(allocator.tryNext(), 1n);
});

test('many waiters share one fetch (single flight)', async () => {
  const source = new FakeSource(false);
  const allocator = new SequenceAllocator(source, { batch: 100 });
  const pending = Array.from({ length: 50 }, () => allocator.next());
  await flush();
  assert.equal(source.requests.length, 1);
  source.release();
  const numbers = await Promise.all(pending);
  assert.equal(new Set(numbers).size, 50);
  assert.deepEqual(numbers, Array.from({ length: 50 }, (_, i) => BigInt(i + 1)));
});

test('more waiters than a range holds are served by successive fetches, one at a time', async () => {
  const source = new FakeSource(false);
  const allocator = new SequenceAllocator(source, { batch: 10 });
  const pending = Array.from({ length: 35 }, () => allocator.next());
  const all = Promise.all(pending);
  for (let released = 0; released < 4; released++) {
    const deadline = Date.now() + 2000;
    while (source.waiting === 0) {
      assert.ok(Date.now() < deadline, 'no fetch started');
      await flush();
    }
    assert.equal(source.waiting, 1);
    source.release();
  }
  const numbers = await all;
  assert.equal(new Set(numbers).size, 35);
  assert.equal(source.maxInFlight, 1);
});

test('the next range is fetched in the background once prefetchAt of the current one is left', async () => {
  const source = new FakeSource(false);
  const allocator = new SequenceAllocator(source, { batch: 10, prefetchAt: 0.5 });
  void allocator.tryNext();
  source.release();
  await flush();
  for (let i = 1n; i <= 4n; i++) assert.equal(allocator.tryNext(), i);
  assert.equal(source.requests.length, 1, 'no prefetch while more than half is left');
  assert.equal(allocator.tryNext(), 5n);
  assert.equal(source.requests.length, 2, 'prefetch when half is left');
  source.release();
  await flush();
  // The whole of both ranges comes from the sync path: nobody ever waits.
  for (let i = 6n; i <= 20n; i++) assert.equal(allocator.tryNext(), i);
  assert.equal(source.maxInFlight, 1);
});

test('prefetchAt 1 fetches the next range as soon as the first number of one is taken', async () => {
  const source = new FakeSource(false);
  const allocator = new SequenceAllocator(source, { batch: 10, prefetchAt: 1 });
  void allocator.tryNext();
  source.release();
  await flush();
  assert.equal(allocator.tryNext(), 1n);
  assert.equal(source.requests.length, 2, 'the prefetch is under way');
  source.release();
  await flush();
  for (let i = 2n; i <= 11n; i++) assert.equal(allocator.tryNext(), i);
});

test('adaptive: when a caller had to wait for the next range, the batch doubles, however long the range lasted', async (t) => {
  let now = 1;
  t.mock.method(performance, 'now', () => now);
  const source = new FakeSource(false);
  const allocator = new SequenceAllocator(source, { batch: 10, adaptive: true, maxBatch: 1000, prefetchAt: 0.5 });
  void allocator.tryNext();
  source.release();
  await flush();
  assert.equal(allocator.tryNext(), 1n);
  // Five seconds for a range: neither short enough to grow nor long enough to shrink by time alone.
  now += 5000;
  for (let i = 2n; i <= 10n; i++) assert.equal(allocator.tryNext(), i);
  assert.equal(source.requests.length, 2, 'prefetched at half');
  // The prefetch comes late: a caller finds the cache empty.
  assert.equal(allocator.tryNext(), undefined);
  source.release();
  await flush();
  assert.equal(allocator.tryNext(), 11n);
  assert.equal(allocator.batchSize, 20);
  for (let i = 12n; i <= 15n; i++) assert.equal(allocator.tryNext(), i);
  assert.equal(source.requests.at(-1)!.count, 20n, 'the next fetch asks for the doubled batch');
  // The same five seconds with the prefetch in time: the size stays.
  source.release();
  await flush();
  now += 5000;
  for (let i = 16n; i <= 20n; i++) assert.equal(allocator.tryNext(), i);
  assert.equal(allocator.tryNext(), 21n);
  assert.equal(allocator.batchSize, 20);
});

test('a failed fetch rejects the waiting next() calls, and the allocator recovers', async () => {
  const source = new FakeSource();
  source.failNext = new Error('server down');
  const allocator = new SequenceAllocator(source, { batch: 5 });
  await assert.rejects(allocator.next(), /server down/);
  assert.equal(await allocator.next(), 1n);
});

test('a failed background prefetch is not an unhandled rejection; the next fetch retries', async () => {
  const source = new FakeSource();
  const allocator = new SequenceAllocator(source, { batch: 4, prefetchAt: 0.5 });
  assert.equal(await allocator.next(), 1n);
  source.failNext = new Error('blip');
  assert.equal(allocator.tryNext(), 2n); // two left: the prefetch starts, and fails
  await flush();
  assert.equal(allocator.tryNext(), 3n);
  assert.equal(allocator.tryNext(), 4n);
  assert.equal(await allocator.next(), 5n);
});

test('adaptive: the batch doubles while ranges run out fast, never past maxBatch', async () => {
  const source = new FakeSource();
  const allocator = new SequenceAllocator(source, { batch: 10, adaptive: true, maxBatch: 80 });
  for (let i = 0; i < 2000; i++) await allocator.next();
  const counts = source.requests.map((r) => Number(r.count));
  assert.equal(counts[0], 10);
  assert.ok(counts.includes(80), `sizes ${counts.join(',')}`);
  assert.ok(counts.every((c) => c <= 80));
  assert.equal(allocator.batchSize, 80);
});

test('adaptive, against a server whose --max-batch is below maxBatch: a refused size is asked again at that limit, and growth stops there', async () => {
  const source = new FakeSource();
  source.maxBatch = 50n;
  const allocator = new SequenceAllocator(source, { batch: 10, adaptive: true, maxBatch: 1000 });
  let last = 0n;
  for (let i = 0; i < 3000; i++) {
    const n = await allocator.next();
    assert.ok(n > last);
    last = n;
  }
  const counts = source.requests.map((r) => Number(r.count));
  const refused = counts.findIndex((c) => c > 50);
  assert.deepEqual(counts.slice(refused, refused + 2), [80, 50], `refused at 80, asked again at the limit: ${counts.slice(0, 8).join(',')}`);
  assert.equal(counts.filter((c) => c > 50).length, 1, 'refused once, not again');
  assert.equal(allocator.batchSize, 50);
});

test('a refused size is not asked again when the allocator is not adaptive, or the limit is below its smallest batch', async () => {
  for (const options of [{ batch: 100 }, { batch: 100, adaptive: true }]) {
    const source = new FakeSource();
    source.maxBatch = 50n;
    const allocator = new SequenceAllocator(source, options);
    await assert.rejects(allocator.next(), (err: unknown) => err instanceof ServerError && /invalid count '100'/.test(err.message));
    assert.equal(source.requests.length, 1);
  }
});

test('without adaptive the batch stays fixed', async () => {
  const source = new FakeSource();
  const allocator = new SequenceAllocator(source, { batch: 10 });
  for (let i = 0; i < 500; i++) await allocator.next();
  assert.ok(source.requests.every((r) => r.count === 10n));
});

test('bad options are refused', () => {
  const source = new FakeSource();
  assert.throws(() => new SequenceAllocator(source, { batch: 0 }), RangeError);
  assert.throws(() => new SequenceAllocator(source, { batch: 1.5 }), RangeError);
  assert.throws(() => new SequenceAllocator(source, { prefetchAt: 2 }), RangeError);
  assert.throws(() => new SequenceAllocator(source, { batch: 100, maxBatch: 10 }), RangeError);
});

test('the sync path hands out well over 10 million numbers per second', async () => {
  const source = new FakeSource();
  const allocator = new SequenceAllocator(source, { batch: 50_000_000 });
  await allocator.next();
  const n = 5_000_000;
  let best = 0;
  for (let round = 0; round < 3; round++) {
    const started = performance.now();
    let last = 0n;
    for (let i = 0; i < n; i++) last = allocator.tryNext()!;
    const perSecond = n / ((performance.now() - started) / 1000);
    best = Math.max(best, perSecond);
    assert.equal(last, BigInt((round + 1) * n + 1));
  }
  assert.ok(best > 10_000_000, `only ${Math.round(best / 1e6)}M numbers/s`);
});
