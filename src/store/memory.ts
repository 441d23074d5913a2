/**
 * A Store in memory, for tests: it can hold writes in flight, fail them, fence
 * them, and be "killed" to see what a crash would have left on disk.
 *
 * Like a disk, it separates what was written from what was acknowledged: a
 * persist whose promise resolved is durable; one that was still in flight, or
 * that failed, may or may not have landed, and the test decides which.
 */
import type { Marks, Store } from '../core/ports.js';
import { FencedError, PersistenceError } from '../errors.js';
import { checkMarks } from '../core/limits.js';

export interface MemoryStoreOptions {
  /** The state "on disk" at start, e.g. what crash() returned from an earlier store. */
  initial?: Iterable<readonly [string, bigint]>;
  description?: string;
  /** Awaited by every persist before it takes effect, e.g. to model a slow disk. */
  delay?: (marks: Marks) => Promise<void>;
  /** load() rejects with this, e.g. a StateCorruptError to test start-up refusing. */
  loadError?: Error;
}

export interface MemoryStoreCalls {
  load: number;
  persist: number;
  /** Persists that resolved. */
  persisted: number;
  /** Persists that rejected. */
  failed: number;
  close: number;
  /** The most persists ever in flight at once; the Store contract allows 1. */
  maxInFlight: number;
}

interface Failure {
  error: () => Error;
  /** The marks reach the "disk" although the caller sees an error (e.g. fsync reported EIO). */
  landed: boolean;
}

export class MemoryStore implements Store {
  readonly description: string;
  readonly calls: MemoryStoreCalls = { load: 0, persist: 0, persisted: 0, failed: 0, close: 0, maxInFlight: 0 };
  /** Awaited by every persist before it takes effect; may be replaced mid-test. */
  delay: ((marks: Marks) => Promise<void>) | null;

  private durable: Map<string, bigint>;
  private readonly loadError: Error | undefined;
  private readonly failures: Failure[] = [];
  private fencedBy: string | null = null;
  private crashed = false;
  private gate: { opened: Promise<void>; open: () => void } | null = null;
  private readonly inFlight = new Set<Marks>();

  constructor(opts: MemoryStoreOptions = {}) {
    this.description = opts.description ?? 'memory';
    this.durable = new Map(opts.initial ?? []);
    this.delay = opts.delay ?? null;
    this.loadError = opts.loadError;
  }

  async load(): Promise<Map<string, bigint>> {
    this.calls.load++;
    if (this.loadError) throw this.loadError;
    return new Map(this.durable);
  }

  async persist(marks: Marks): Promise<void> {
    this.calls.persist++;
    // Copied: the caller may reuse or change its map after the call.
    const batch: Marks = new Map(marks);
    this.inFlight.add(batch);
    this.calls.maxInFlight = Math.max(this.calls.maxInFlight, this.inFlight.size);
    try {
      checkMarks(batch);
      if (this.delay) await this.delay(batch);
      while (this.gate) await this.gate.opened;
      if (this.crashed) throw new PersistenceError(`${this.description} crashed`);
      if (this.fencedBy !== null) throw new FencedError(this.fencedBy);
      const failure = this.failures.shift();
      if (failure) {
        if (failure.landed) this.apply(batch);
        throw failure.error();
      }
      this.apply(batch);
      this.calls.persisted++;
    } catch (err) {
      this.calls.failed++;
      throw err;
    } finally {
      this.inFlight.delete(batch);
    }
  }

  async close(): Promise<void> {
    this.calls.close++;
  }

  /** Makes the next `count` persists reject (after any delay), by default with a PersistenceError. */
  failNext(count: number, opts: { error?: () => Error; landed?: boolean } = {}): void {
    const error = opts.error ?? (() => new PersistenceError('write memory: EIO (injected failure)'));
    for (let i = 0; i < count; i++) this.failures.push({ error, landed: opts.landed ?? false });
  }

  /** From now on every persist rejects with FencedError, as after a lost leadership. */
  fence(detail = 'another node holds the lease'): void {
    this.fencedBy = detail;
  }

  /** Holds every persist, including those already waiting in delay, until resume(). */
  pause(): void {
    if (this.gate) return;
    let open!: () => void;
    const opened = new Promise<void>((resolve) => (open = resolve));
    this.gate = { opened, open };
  }

  resume(): void {
    const gate = this.gate;
    this.gate = null;
    gate?.open();
  }

  /** The marks of the persists in flight now (started, not yet settled). */
  pending(): Marks[] {
    return [...this.inFlight];
  }

  /** What a load would return now: every acknowledged persist and any failed one that landed. */
  state(): Map<string, bigint> {
    return new Map(this.durable);
  }

  /**
   * Models kill -9: returns what a restart would load. The persists in flight
   * landed or not as `inFlight` says; afterwards they and all later ones reject.
   */
  crash(opts: { inFlight?: 'landed' | 'lost' } = {}): Map<string, bigint> {
    if (!this.crashed && opts.inFlight === 'landed') for (const batch of this.inFlight) this.apply(batch);
    this.crashed = true;
    this.resume();
    return new Map(this.durable);
  }

  private apply(batch: Marks): void {
    for (const [name, mark] of batch) this.durable.set(name, mark);
  }
}
