/**
 * The sequence core: counters by name, reservation windows, and the one rule
 * everything else rests on: a number is handed out only below its sequence's
 * durable mark. Storage is reached only through the Store port; this file does
 * no I/O of its own, so tests drive it with stores that delay, fail and crash.
 *
 * Reservation: with a window W, the core persists mark = next + W ahead of time
 * and refills when less than W/2 remains, so in steady state no request waits on
 * the disk and a crash skips at most W numbers (or, when the requests waiting for
 * a write ask for more than W, their numbers: see want()). W adapts per sequence
 * to its traffic (see adapt()), between a floor and `--reserve`, its ceiling: a
 * window sized for a million numbers a second would make a quiet sequence skip a
 * million at a crash, and one sized for a quiet sequence would make a busy one
 * wait on the disk. With `--reserve=0` (gapless) every request waits for a persist
 * of exactly the numbers promised; all requests that arrive while one write is in
 * flight share the next write.
 */
import { END, MAX_VALUE, SHUTTING_DOWN_MESSAGE, STARTING_MESSAGE } from './limits.js';
import type { Leadership, Marks, Store } from './ports.js';

/** A refusal the command layer turns into a wire error. */
export class SequenceError {
  /**
   * The refusal as a client of the TLS port gets it: for a NOTLEADER, one naming
   * the leader's TLS address (its plain one would take a TLS client nowhere);
   * this one otherwise.
   */
  readonly onTlsPort: SequenceError;
  constructor(
    readonly code: 'ERR' | 'NOTLEADER',
    readonly message: string,
    onTlsPort?: SequenceError,
  ) {
    this.onTlsPort = onTlsPort ?? this;
  }
}

/**
 * The NOTLEADER made last. A node that cannot serve refuses every request the
 * same way, so keeping the one object lets its wire text be encoded once.
 */
let lastNotLeader = new SequenceError('NOTLEADER', '');

/** NOTLEADER naming `address` (and `tlsAddress` on the TLS port); an empty address gives the bare code. */
export function notLeaderAt(address: string, tlsAddress = ''): SequenceError {
  if (lastNotLeader.message !== address || lastNotLeader.onTlsPort.message !== tlsAddress) {
    const onTlsPort = tlsAddress === address ? undefined : new SequenceError('NOTLEADER', tlsAddress);
    lastNotLeader = new SequenceError('NOTLEADER', address, onTlsPort);
  }
  return lastNotLeader;
}

/** NOTLEADER naming the leader when one is known (the bare code otherwise). */
export function notLeader(leadership: Leadership | undefined): SequenceError {
  return notLeaderAt(leadership?.leaderAddress() ?? '', leadership?.leaderTlsAddress() ?? '');
}

export const EXHAUSTED = new SequenceError('ERR', 'sequence exhausted');
export const SHUTTING_DOWN = new SequenceError('ERR', SHUTTING_DOWN_MESSAGE);
/** What a waiting request whose caller left gets instead of numbers; nobody reads it. */
const CALLER_GONE = new SequenceError('ERR', 'the connection closed before the numbers were durable');
const STARTING = new SequenceError('ERR', STARTING_MESSAGE);

export interface SequenceSnapshot {
  readonly name: string;
  /** What the next GETSEQ returns (END when exhausted). */
  readonly next: bigint;
  /** Numbers below this are durable and may be handed out without waiting. */
  readonly durableMark: bigint;
  /** Numbers handed out by this process since it started (a batch of 100 counts 100); exact at any size. */
  readonly issued: bigint;
}

/**
 * Who asked for numbers, as far as the core cares. A request that waits for
 * storage takes its numbers only when they are durable; if its caller is gone
 * by then (its connection closed, or was cut off at shutdown), it takes none,
 * so the numbers go to the next request instead of into a gap.
 */
export interface Caller {
  readonly gone: boolean;
}

/** What the command layer needs from whatever hands out numbers on this node. */
export interface SequenceSource {
  /** First of `count` numbers; a promise only when the reply must wait for storage. */
  allocate(name: string, count: bigint, caller?: Caller): bigint | SequenceError | Promise<bigint>;
  /** What the next GETSEQ returns; a promise only while requests ahead of it wait for storage. */
  current(name: string, caller?: Caller): bigint | SequenceError | Promise<bigint>;
  snapshot(): SequenceSnapshot[];
  /**
   * Drops the requests of `caller` that still wait for storage (its connection
   * closed): they take no numbers.
   */
  forget?(caller: Caller): void;
}

export interface SequencerEvents {
  /** A persist finished; `ms` is how long the store took. */
  persisted?(ms: number, sequences: number): void;
  /** A persist failed; the core retries after `retryInMs`. */
  persistFailed?(err: Error, retryInMs: number): void;
  /** The first successful persist after a failure. */
  persistRecovered?(downForMs: number): void;
  /** A store write was fenced: this node lost leadership. */
  fenced?(err: Error): void;
}

export interface SequencerOptions {
  /** null: the in-memory mode, nothing is ever persisted and nothing waits. */
  store: Store | null;
  initial: bigint;
  /** The largest window (`--reserve`); 0 is the gapless mode. */
  reserve: bigint;
  /** The smallest window; WINDOW_FLOOR unless given, and never above `reserve` (equal: a fixed window). */
  floor?: bigint;
  maxSequences: number;
  /** In a group, numbers are handed out only while the lease is surely alive. */
  leadership?: Leadership;
  events?: SequencerEvents;
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Monotonic milliseconds. */
  now?: () => number;
  /** false: no timer runs decay(); the caller does (tests, on a clock of their own). Default true. */
  decayTimer?: boolean;
}

/** A request in line for numbers; a CURRENT in line behind such requests has count 0. */
interface Waiter {
  count: bigint;
  caller: Caller | undefined;
  resolve(first: bigint): void;
  reject(err: SequenceError): void;
}

/** CURRENT's answer for a sequence whose next number is `next`: past 2^63-1, the sequence is used up. */
function currentAnswer(next: bigint): bigint | SequenceError {
  return next > MAX_VALUE ? EXHAUSTED : next;
}

/**
 * Answers a waiter whose turn came at `first`: the first of its numbers, or, for a
 * CURRENT (count 0), CURRENT's answer. Only a CURRENT can find the sequence used
 * up there: a request for numbers is queued only when they fit whole.
 */
function settle(w: Waiter, first: bigint): void {
  const answer = currentAnswer(first);
  if (answer instanceof SequenceError) w.reject(answer);
  else w.resolve(answer);
}

interface Seq {
  readonly name: string;
  next: bigint;
  /** Durable: numbers below it may be handed out now (END in memory). */
  mark: bigint;
  /** The mark asked of the store (>= mark); equal to mark when nothing is pending. */
  target: bigint;
  /**
   * target - reserve/2, kept so the hot path compares instead of subtracting:
   * past it the next window is asked for, and while a write is in flight the
   * same threshold keeps later requests from asking again.
   */
  refillAt: bigint;
  /** The mark the store holds now, as far as this process knows (null: none yet). */
  stored: bigint | null;
  /** The reservation window, adapted to the traffic: floor <= window <= reserve. */
  window: bigint;
  /**
   * When its window was last judged or a write raising its mark landed (monotonic
   * ms; see adapt()), to tell how fast the window went; `nextAtJudge` is `next` then.
   */
  judgedAt: number;
  nextAtJudge: bigint;
  /** Requests that need numbers at or beyond `mark`, in arrival order. */
  waiters: Waiter[];
  waitingCount: bigint;
  /**
   * `next` when this process began serving the sequence. Numbers leave only by
   * moving `next` up, so next - servedFrom is how many were issued, with no count
   * kept per request.
   */
  servedFrom: bigint;
}

type State = 'new' | 'serving' | 'closing' | 'closed' | 'aborted';

/** The smallest window a sequence shrinks to (or `--reserve`, when that is smaller). */
export const WINDOW_FLOOR = 1000n;
/**
 * A window is meant to last one to two seconds of its sequence's traffic: a write
 * for it asked less than half a second after the last one landed doubles it (half
 * of it went in that time), one asked more than a second after halves it. Writes
 * then come every half second to second whatever the rate, and a crash skips about
 * the numbers of the last one or two seconds.
 */
const GROW_WITHIN_MS = 500;
const SHRINK_AFTER_MS = 1000;
/**
 * How often decay() looks for windows not judged for SHRINK_AFTER_MS. Half of it,
 * so that a window is cut within half a second of becoming eligible: at the same
 * period, a timer firing a hair under a second after the last cut would skip it
 * and cut a second later.
 */
const DECAY_EVERY_MS = SHRINK_AFTER_MS / 2;

/** Past this, with a mark at `mark`, the next window is asked for: half of it is used. END, at END: nothing more to reserve. */
function refillPoint(mark: bigint, window: bigint): bigint {
  return mark >= END ? END : mark - window / 2n;
}

/** Marks the window of `s` judged at `now`: its time, and the numbers it takes, count from here. */
function judged(s: Seq, now: number): void {
  s.judgedAt = now;
  s.nextAtJudge = s.next;
}

const isFenced = (err: unknown): boolean => (err as { code?: string })?.code === 'FENCED';

export class Sequencer implements SequenceSource {
  private readonly seqs = new Map<string, Seq>();
  /** The sequence asked for last: most traffic names one sequence over and over. */
  private last: Seq | null = null;
  private readonly store: Store | null;
  private readonly initial: bigint;
  /** `--reserve`: the ceiling of every window. */
  private readonly reserve: bigint;
  private readonly floor: bigint;
  private readonly maxSequences: number;
  private readonly leadership: Leadership | undefined;
  private readonly events: SequencerEvents;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;
  private readonly now: () => number;

  private state: State = 'new';
  private readonly dirty = new Set<Seq>();
  private writing: Promise<void> | null = null;
  private flushScheduled = false;
  private failure: SequenceError | null = null;
  private failingSince = 0;
  private retryDelay = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private decayTimer: NodeJS.Timeout | null = null;
  private readonly runsDecay: boolean;
  private readonly tooMany: SequenceError;

  constructor(opts: SequencerOptions) {
    this.store = opts.store;
    this.initial = opts.initial;
    this.reserve = opts.reserve;
    const floor = opts.floor ?? WINDOW_FLOOR;
    this.floor = floor < opts.reserve ? floor : opts.reserve;
    this.maxSequences = opts.maxSequences;
    this.leadership = opts.leadership;
    this.events = opts.events ?? {};
    this.retryMinMs = opts.retryMinMs ?? 50;
    this.retryMaxMs = opts.retryMaxMs ?? 5000;
    this.now = opts.now ?? (() => performance.now());
    this.runsDecay = opts.decayTimer ?? true;
    this.tooMany = new SequenceError(
      'ERR',
      `too many sequences: at most ${opts.maxSequences} may exist (--max-sequences); use an existing name`,
    );
  }

  /** Loads persisted marks. `--initial` seeds new sequences; above a stored mark, it wins. */
  async open(): Promise<{ raisedByInitial: string[] }> {
    if (this.state !== 'new') throw new Error('Sequencer.open called twice');
    const raisedByInitial: string[] = [];
    if (this.store) {
      const marks = await this.store.load();
      for (const [name, mark] of marks) {
        const s = this.create(name, mark);
        s.stored = mark;
        if (this.initial > mark) {
          s.next = this.initial;
          s.servedFrom = this.initial;
          raisedByInitial.push(name);
        }
      }
    }
    this.state = 'serving';
    if (this.runsDecay && this.store !== null && this.floor < this.reserve) {
      this.decayTimer = setInterval(() => this.decay(), DECAY_EVERY_MS);
      this.decayTimer.unref();
    }
    return { raisedByInitial };
  }

  get persistenceFailure(): string | null {
    return this.failure?.message ?? null;
  }

  allocate(name: string, count: bigint, caller?: Caller): bigint | SequenceError | Promise<bigint> {
    const refusal = this.gate();
    if (refusal) return refusal;
    const s = this.find(name, count);
    if (s === undefined) return this.tooMany;
    if (s === null) return EXHAUSTED;
    const first = s.next;
    const end = first + count;
    if (end > END) return EXHAUSTED;
    if (s.waiters.length === 0 && end <= s.mark) {
      s.next = end;
      if (end > s.refillAt) this.want(s);
      return first;
    }
    if (this.failure !== null) {
      // Do not queue behind a broken store; the retry loop is already running.
      return this.failure;
    }
    if (s.waitingCount + end > END) return EXHAUSTED;
    return new Promise<bigint>((resolve, reject) => {
      s.waiters.push({ count, caller, resolve, reject });
      s.waitingCount += count;
      this.want(s);
    });
  }

  current(name: string, caller?: Caller): bigint | SequenceError | Promise<bigint> {
    const refusal = this.gate();
    if (refusal) return refusal;
    const s = this.last?.name === name ? this.last : this.seqs.get(name);
    // A name not used yet is not created by a look at it: a typo or a probe would
    // otherwise take one of --max-sequences for good (and be written on stop).
    if (s === undefined) return this.seqs.size >= this.maxSequences ? this.tooMany : this.initial;
    if (s.waiters.length > 0) {
      // Requests waiting for storage take their numbers first, or none at all (storage
      // fails, their connection closes): known only once they are settled, so the
      // answer waits in line behind them. Taking no numbers, it needs no write.
      return new Promise<bigint>((resolve, reject) => {
        s.waiters.push({ count: 0n, caller, resolve, reject });
      });
    }
    return currentAnswer(s.next);
  }

  snapshot(): SequenceSnapshot[] {
    const out: SequenceSnapshot[] = [];
    for (const s of this.seqs.values()) {
      out.push({ name: s.name, next: s.next + s.waitingCount, durableMark: s.mark, issued: s.next - s.servedFrom });
    }
    return out;
  }

  /**
   * Clean stop: lets waiting requests finish, then persists each sequence's exact
   * next number so the next start continues with no gap. Resolves false when the
   * exact numbers could not be stored (the larger reserved marks stay: a gap, never a repeat).
   */
  async close(): Promise<boolean> {
    // Aborted, it stored no exact marks and never will (see below).
    if (this.state === 'aborted') return false;
    if (this.state === 'closed') return true;
    this.state = 'closing';
    this.stopTimers();
    if (this.store === null) {
      this.state = 'closed';
      return true;
    }
    // Waiters hold requests that were already read: give them one more chance at storage.
    for (let i = 0; i < 3 && (this.writing || this.dirty.size > 0); i++) {
      if (this.writing) await this.writing.catch(() => {});
      if (this.dirty.size > 0 && !this.writing) this.flush();
      if (this.writing) await this.writing.catch(() => {});
    }
    // Aborted meanwhile (the term lost, a write fenced): a node that no longer leads writes
    // nothing more, not even exact marks, whatever its store would let through.
    if (this.isAborted()) return false;
    this.failWaiters(SHUTTING_DOWN);
    // From here nothing more is handed out: a number taken while the exact marks
    // are being written would lie at or above them, and be issued again after restart.
    this.state = 'closed';
    // A write may still be in flight after the rounds above; the store takes one at a time.
    if (this.writing) await this.writing.catch(() => {});
    const exact = new Map<string, bigint>();
    for (const s of this.seqs.values()) {
      // stored === null includes writes that reported failure but may have landed.
      if (s.stored !== s.next) exact.set(s.name, s.next);
    }
    let ok = true;
    if (exact.size > 0) {
      try {
        await this.store.persist(exact);
        for (const [name, v] of exact) {
          const s = this.seqs.get(name)!;
          s.stored = v;
          s.mark = v;
          this.setTarget(s, v);
        }
      } catch {
        ok = false;
      }
    }
    return ok;
  }

  /**
   * Stops serving at once without persisting (leadership lost, or a test's crash).
   * Waiting requests fail; nothing in flight can release a number afterwards.
   */
  abort(reason: SequenceError): void {
    if (this.state === 'closed' || this.state === 'aborted') return;
    this.state = 'aborted';
    this.stopTimers();
    this.dirty.clear();
    this.failWaiters(reason);
  }

  private stopTimers(): void {
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    if (this.decayTimer) {
      clearInterval(this.decayTimer);
      this.decayTimer = null;
    }
  }

  /** A method, not an inline test: TypeScript keeps `state` narrowed to 'closing' across close()'s awaits. */
  private isAborted(): boolean {
    return this.state === 'aborted';
  }

  private gate(): SequenceError | null {
    if (this.state !== 'serving') {
      if (this.state === 'aborted') return notLeader(this.leadership);
      if (this.state === 'new') return STARTING;
      // While closing, requests already read are still answered from memory.
      if (this.state !== 'closing') return SHUTTING_DOWN;
    }
    if (this.leadership !== undefined && !this.leadership.canServe()) return notLeader(this.leadership);
    return null;
  }

  /**
   * The sequence by name, created at first use; undefined when --max-sequences are
   * taken, null when a new one could not serve `count` numbers from --initial (a
   * request refused as exhausted creates nothing, and takes no place).
   */
  private find(name: string, count: bigint): Seq | undefined | null {
    const last = this.last;
    // Sequences are never removed, so the one found last stays valid.
    if (last !== null && last.name === name) return last;
    let s = this.seqs.get(name);
    if (s === undefined) {
      if (this.initial + count > END) return null;
      s = this.createNew(name);
    }
    if (s !== undefined) this.last = s;
    return s;
  }

  private createNew(name: string): Seq | undefined {
    if (this.seqs.size >= this.maxSequences) return undefined;
    return this.create(name, this.initial);
  }

  /** A sequence starting at `next`; durable up to there, or (in memory) all the way to END. */
  private create(name: string, next: bigint): Seq {
    // In memory there is nothing to wait for: every number is "durable", and the
    // fast path of allocate() alone serves it.
    const mark = this.store === null ? END : next;
    const s: Seq = {
      name,
      next,
      mark,
      target: mark,
      refillAt: refillPoint(mark, this.floor),
      window: this.floor,
      judgedAt: Number.NEGATIVE_INFINITY,
      nextAtJudge: next,
      stored: null,
      waiters: [],
      waitingCount: 0n,
      servedFrom: next,
    };
    this.seqs.set(name, s);
    return s;
  }

  private setTarget(s: Seq, target: bigint): void {
    s.target = target;
    s.refillAt = refillPoint(target, s.window);
  }

  /**
   * Asks for a mark that covers every waiter, and at least a window. The waiters
   * are served out of that window rather than on top of it: a crash right after
   * the write then skips at most the window, or, if more, the numbers of those
   * waiters, whose replies died with the process.
   */
  private want(s: Seq): void {
    const target = this.windowTarget(s);
    // A target no higher is already asked for: it waits in `dirty` or is being written
    // (a failed write puts its sequences back in `dirty`).
    if (target <= s.target) return;
    this.setTarget(s, target);
    this.dirty.add(s);
    this.scheduleFlush();
  }

  /**
   * What a write must store for `s` now, or null for no write: a mark covering the
   * waiters and the next window, never below `mark` (numbers below it may already
   * be handed out), or `mark` itself when the store may hold something else.
   */
  private neededTarget(s: Seq): bigint | null {
    const window = this.windowTarget(s);
    if (window > s.mark && (s.waiters.length > 0 || s.next > refillPoint(s.mark, s.window))) return window;
    return s.stored === s.mark ? null : s.mark;
  }

  /**
   * Doubles or halves the window of `s` by the time since its last write landed or
   * its window was last judged (see GROW_WITHIN_MS), within floor..reserve. A write
   * is asked once half a window is used, or when requests do not fit, so one asked
   * soon after the last says the window is short for the traffic, and one long after
   * that it is long. Judged once per write, not per request asking: under load,
   * requests keep asking while a write is in flight, and each would double it.
   */
  private adapt(s: Seq, now: number): void {
    if (this.floor === this.reserve) return;
    const since = now - s.judgedAt;
    judged(s, now);
    if (since < GROW_WITHIN_MS) {
      const grown = s.window * 2n;
      s.window = grown < this.reserve ? grown : this.reserve;
    } else if (since > SHRINK_AFTER_MS) {
      this.shrinkTo(s, s.window / 2n);
    }
  }

  /** Sets the window of `s` to `window`, or the floor if that is more. */
  private shrinkTo(s: Seq, window: bigint): void {
    s.window = window > this.floor ? window : this.floor;
  }

  /** A mark covering every waiter and at least a window past `next`, at most END. */
  private windowTarget(s: Seq): bigint {
    const target = s.next + (s.waitingCount > s.window ? s.waitingCount : s.window);
    return target > END ? END : target;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.writing !== null || this.retryTimer !== null) return;
    this.flushScheduled = true;
    // setImmediate, not nextTick: requests from every connection read in this turn
    // of the event loop share one write (group commit).
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.writing !== null || this.dirty.size === 0 || this.store === null) return;
    if (this.state !== 'serving' && this.state !== 'closing') return;
    const batch = new Map<string, bigint>();
    const now = this.now();
    for (const s of this.dirty) {
      // A retry after a failure, or a mark lowered to give numbers back (target at or
      // below mark), says nothing about the traffic.
      if (s.target > s.mark && this.failure === null) this.adapt(s, now);
      // Asked for when it was marked dirty; requests that have left since (their
      // connections closed) need nothing, and a mark written for them would be skipped by a crash.
      const target = this.neededTarget(s);
      this.setTarget(s, target ?? s.mark);
      if (target !== null) batch.set(s.name, target);
    }
    this.dirty.clear();
    if (batch.size === 0) return;
    const started = this.now();
    const write = this.store.persist(batch as Marks).then(
      () => this.persisted(batch, started),
      (err: unknown) => this.persistFailed(batch, err),
    );
    this.writing = write;
  }

  private persisted(batch: Map<string, bigint>, started: number): void {
    this.writing = null;
    if (this.state === 'aborted') return;
    // Recorded in every state: after close() stopped handing out, what the write it
    // waits for last stored decides whether the exact marks must go over it.
    this.recordStored(batch, true);
    if (this.state === 'closed') return;
    const ms = this.now() - started;
    if (this.failure !== null) {
      const down = this.now() - this.failingSince;
      this.failure = null;
      this.retryDelay = 0;
      this.events.persistRecovered?.(down);
    }
    const now = this.now();
    for (const [name, mark] of batch) {
      const s = this.seqs.get(name);
      if (s === undefined) continue;
      if (mark > s.mark) {
        s.mark = mark;
        // The window's time runs from here: a write that took long says nothing about
        // how fast the window went, and requests asking again as soon as it lands say
        // it was short. (A write lowering the mark, by giveBack(), judges nothing.)
        judged(s, now);
      }
      this.release(s);
      this.giveBack(s);
    }
    this.events.persisted?.(ms, batch.size);
    if (this.dirty.size > 0) this.flush();
  }

  /** What the store holds after a write: the marks written, or unknown when it failed (it may have landed). */
  private recordStored(batch: Map<string, bigint>, ok: boolean): void {
    for (const [name, mark] of batch) {
      const s = this.seqs.get(name);
      if (s !== undefined) s.stored = ok ? mark : null;
    }
  }

  private persistFailed(batch: Map<string, bigint>, err: unknown): void {
    this.writing = null;
    if (this.state === 'aborted') return;
    this.recordStored(batch, false);
    if (this.state === 'closed') return;
    const error = err instanceof Error ? err : new Error(String(err));
    if (isFenced(error)) {
      this.events.fenced?.(error);
      this.abort(notLeader(this.leadership));
      return;
    }
    if (this.failure === null) this.failingSince = this.now();
    this.failure = new SequenceError('ERR', `persistence unavailable: ${error.message}`);
    // The store may or may not hold the new marks; only what it confirms counts,
    // so the targets stay pending and the same write is retried.
    for (const name of batch.keys()) {
      const s = this.seqs.get(name);
      if (s === undefined) continue;
      this.dirty.add(s);
    }
    // Waiting requests get their error now rather than hang; their numbers were
    // never taken, so nothing is skipped. A CURRENT needs no storage: it is answered.
    this.failWaiters(this.failure, true);
    for (const s of this.dirty) {
      const target = this.windowTarget(s);
      this.setTarget(s, target > s.mark ? target : s.mark);
    }
    this.retryDelay = Math.min(this.retryMaxMs, this.retryDelay === 0 ? this.retryMinMs : this.retryDelay * 2);
    const jittered = Math.round(this.retryDelay * (0.5 + Math.random() / 2));
    this.events.persistFailed?.(error, jittered);
    if (this.state === 'closing') return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.flush();
    }, jittered);
    this.retryTimer.unref();
  }

  /** Hands numbers to waiters, in order, as far as the durable mark allows. */
  private release(s: Seq): void {
    const ws = s.waiters;
    let i = 0;
    while (i < ws.length) {
      const w = ws[i]!;
      if (w.caller?.gone === true) {
        s.waitingCount -= w.count;
        w.reject(CALLER_GONE);
        i++;
        continue;
      }
      const end = s.next + w.count;
      if (end > s.mark) break;
      const first = s.next;
      s.next = end;
      s.waitingCount -= w.count;
      settle(w, first);
      i++;
    }
    if (i > 0) ws.splice(0, i);
    if (ws.length > 0 || (this.reserve > 0n && s.next > s.refillAt)) this.want(s);
  }

  /**
   * Shrinks the window of each sequence not judged for SHRINK_AFTER_MS to two
   * seconds' worth at the rate it took numbers since (at most half the window, at
   * least the floor), and gives back what it holds reserved beyond that. A window
   * is judged only when a refill is asked, after half of it is used: a sequence
   * gone quiet after a burst would keep the burst's window, and a crash would skip
   * it. Gone quiet, it is back at the floor within three seconds of its last
   * refill: one cut sized by what it took after that refill, then one to the floor.
   * Run twice a second by a timer from open(); tests call it directly.
   */
  decay(): void {
    if (this.state !== 'serving') return;
    const now = this.now();
    for (const s of this.seqs.values()) {
      // A write asked, in flight or retried after a failure: its landing judges the window anew.
      const since = now - s.judgedAt;
      if (s.window <= this.floor || s.target > s.mark || since <= SHRINK_AFTER_MS || !Number.isFinite(since)) continue;
      const half = s.window / 2n;
      // Two seconds' worth: a window is meant to last one to two seconds.
      const used = ((s.next - s.nextAtJudge) * BigInt(2 * SHRINK_AFTER_MS)) / BigInt(Math.ceil(since));
      this.shrinkTo(s, used < half ? used : half);
      judged(s, now);
      // The refill point follows the new window.
      this.setTarget(s, s.target);
      this.giveBack(s);
    }
    if (this.dirty.size > 0) this.scheduleFlush();
  }

  /**
   * Lowers the mark to a window past `next` when it is more: after a write that
   * covered requests which left while it was in flight, or once decay() has shrunk
   * the window. Until a lower mark is written, a crash would skip those numbers.
   * Lowered here, below nothing handed out, and written with the next flush.
   */
  private giveBack(s: Seq): void {
    if (s.waiters.length > 0 || this.state !== 'serving') return;
    const window = this.windowTarget(s);
    if (s.mark <= window) return;
    s.mark = window;
    this.setTarget(s, window);
    this.dirty.add(s);
  }

  forget(caller: Caller): void {
    if (this.state === 'closed' || this.state === 'aborted') return;
    for (const s of this.seqs.values()) {
      const ws = s.waiters;
      let kept = 0;
      for (const w of ws) {
        if (w.caller !== caller) {
          ws[kept++] = w;
          continue;
        }
        s.waitingCount -= w.count;
        w.reject(CALLER_GONE);
      }
      if (kept === ws.length) continue;
      ws.length = kept;
      // A request queued behind the dropped ones may fit below the mark already.
      this.release(s);
    }
  }

  /**
   * Fails every request waiting for numbers. The CURRENTs in line behind them get
   * `next` when `answerCurrent` (their wait is over once those requests fail, and a
   * CURRENT needs no storage), and the same error otherwise.
   */
  private failWaiters(err: SequenceError, answerCurrent = false): void {
    for (const s of this.seqs.values()) {
      if (s.waiters.length === 0) continue;
      const ws = s.waiters;
      s.waiters = [];
      s.waitingCount = 0n;
      for (const w of ws) {
        if (w.count > 0n || !answerCurrent) w.reject(err);
        else settle(w, s.next);
      }
    }
  }
}
