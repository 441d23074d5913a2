/**
 * A range cache: takes numbers from the server in batches (GETSEQ_BATCH) and
 * hands them out locally, one range in use and the next fetched in the
 * background before the current one runs out.
 *
 * What it keeps and what it gives up:
 * - Unique: every number comes from a range the server issued to this
 *   allocator alone, so no other client, allocator or restart sees it.
 * - Increasing per allocator: each range lies above the previous one, since
 *   the server issues batches in increasing order.
 * - NOT increasing in real time across clients: another client may already
 *   hold larger numbers while this one still hands out smaller cached ones.
 *   Use getNextSequence() where that order matters.
 * - Gaps: numbers left in the cache when the process stops (or the allocator
 *   is dropped) are never handed out.
 */
import { checkName } from '../core/limits.js';
import type { Batch } from './client.js';
import { ServerError } from './errors.js';
import { maxBatchIn } from '../protocol/refusals.js';

/** Where ranges come from; SequencerClient is one. */
export interface BatchSource {
  getBatch(count: bigint, name?: string): Promise<Batch>;
}

export interface AllocatorOptions {
  /** Numbers per GETSEQ_BATCH; with `adaptive`, the smallest size used. Default 1000. */
  readonly batch?: number;
  /**
   * Fraction of the current range still unused when the next range is
   * fetched, 0..1. Default 0.5: the fetch then has half a range's worth of
   * time to arrive before anyone waits.
   */
  readonly prefetchAt?: number;
  /** The sequence; default `default`. */
  readonly name?: string;
  /**
   * Double the batch when ranges run out fast (or a caller had to wait), halve
   * it when they last long, within `batch`..`maxBatch`. Default false.
   */
  readonly adaptive?: boolean;
  /**
   * Ceiling for adaptive growth. Default 100000. Against a server whose --max-batch
   * is lower, a refused size lowers the ceiling to that limit and the fetch is made
   * again, so growth stops there.
   */
  readonly maxBatch?: number;
}

/** A range used up faster than this is too small: grow. */
const GROW_BELOW_MS = 1_000;
/** A range lasting longer than this is bigger than needed, and a stop would waste it: shrink. */
const SHRINK_ABOVE_MS = 60_000;

export class SequenceAllocator {
  private readonly source: BatchSource;
  private readonly name: string | undefined;
  private readonly prefetchAt: number;
  private readonly minBatch: number;
  /** maxBatch, or the server's --max-batch once a larger size was refused. */
  private ceiling: number;
  private readonly adaptive: boolean;
  private size: number;

  /** The next number of the current range; `left` numbers remain in it. */
  private cursor = 0n;
  private left = 0;
  /** When `left` falls to this, the next range is fetched. */
  private prefetchWhenLeft = -1;
  private spare: Batch | null = null;
  private inflight: Promise<void> | null = null;
  /** performance.now() when the current range was installed; 0 before the first. */
  private rangeStarted = 0;
  /** A caller found the cache empty during the current range: the prefetch came too late. */
  private stalled = false;

  constructor(source: BatchSource, options: AllocatorOptions = {}) {
    const batch = options.batch ?? 1000;
    const maxBatch = options.maxBatch ?? Math.max(batch, 100_000);
    const prefetchAt = options.prefetchAt ?? 0.5;
    if (!Number.isSafeInteger(batch) || batch < 1) throw new RangeError(`allocator batch must be a positive integer, got ${batch}`);
    if (!Number.isSafeInteger(maxBatch) || maxBatch < batch) {
      throw new RangeError(`allocator maxBatch must be an integer no smaller than batch (${batch}), got ${maxBatch}`);
    }
    if (!(prefetchAt >= 0 && prefetchAt <= 1)) throw new RangeError(`allocator prefetchAt must be between 0 and 1, got ${prefetchAt}`);
    if (options.name !== undefined) checkName(options.name);
    this.source = source;
    this.name = options.name;
    this.prefetchAt = prefetchAt;
    this.minBatch = batch;
    this.ceiling = maxBatch;
    this.adaptive = options.adaptive ?? false;
    this.size = batch;
  }

  /** The count the next fetch will ask for. */
  get batchSize(): number {
    return this.size;
  }

  /**
   * The next number if one is cached, else undefined (and a fetch is under
   * way). No promise, no I/O: this is the fast path.
   */
  tryNext(): bigint | undefined {
    if (this.left === 0 && !this.advance()) return undefined;
    const value = this.cursor;
    this.cursor = value + 1n;
    if (--this.left === this.prefetchWhenLeft) void this.refill();
    return value;
  }

  /** The next number, waiting for a range when the cache is empty. Rejects when the fetch fails. */
  next(): Promise<bigint> {
    const value = this.tryNext();
    return value === undefined ? this.nextAfterRefill() : Promise.resolve(value);
  }

  private async nextAfterRefill(): Promise<bigint> {
    for (;;) {
      await this.refill();
      // Other waiters woken by the same fetch may have used it up: then wait for another.
      const value = this.tryNext();
      if (value !== undefined) return value;
    }
  }

  /** Moves the spare range into use; false when there is none (a fetch is then under way). */
  private advance(): boolean {
    const batch = this.spare;
    if (batch === null) {
      this.stalled = true;
      void this.refill();
      return false;
    }
    this.spare = null;
    this.adapt();
    this.cursor = batch.first;
    this.left = Number(batch.count);
    this.prefetchWhenLeft = Math.min(this.left - 1, Math.floor(this.left * this.prefetchAt));
    return this.left > 0 || this.advance();
  }

  /** Single flight: while a fetch is in flight, everyone shares it. */
  private refill(): Promise<void> {
    if (this.inflight !== null) return this.inflight;
    const fetch = this.source.getBatch(BigInt(this.size), this.name).then(
      (batch) => {
        this.inflight = null;
        this.spare = batch;
      },
      (err: unknown): Promise<void> => {
        this.inflight = null;
        // Refused before anything was issued: ask again, within the server's limit.
        const limit = this.adaptive ? this.serverLimitBelowSize(err) : null;
        if (limit === null) throw err;
        this.ceiling = limit;
        this.size = limit;
        return this.refill();
      },
    );
    // A background prefetch has no caller to report to; next() callers await it and see the error.
    fetch.catch(() => {});
    this.inflight = fetch;
    return fetch;
  }

  /** The server's --max-batch when `err` refused the current size for it, and the smallest size still fits. */
  private serverLimitBelowSize(err: unknown): number | null {
    if (!(err instanceof ServerError) || err.wireCode !== 'ERR') return null;
    const limit = maxBatchIn(err.serverMessage);
    if (limit === null || limit >= BigInt(this.size) || limit < BigInt(this.minBatch)) return null;
    return Number(limit);
  }

  private adapt(): void {
    const now = performance.now();
    if (this.adaptive && this.rangeStarted !== 0) {
      const lasted = now - this.rangeStarted;
      if (this.stalled || lasted < GROW_BELOW_MS) this.size = Math.min(this.size * 2, this.ceiling);
      else if (lasted > SHRINK_ABOVE_MS) this.size = Math.max(Math.floor(this.size / 2), this.minBatch);
    }
    this.rangeStarted = now;
    this.stalled = false;
  }
}
