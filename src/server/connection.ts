/**
 * One client socket: bytes -> decoder -> commands -> replies, in request order.
 * Replies for one chunk of pipelined requests leave in a single write. A reply
 * that waits for storage holds back the ones behind it, so order is kept.
 *
 * What one client may cost is bounded: input by the decoder's limits and by
 * pausing reads while the client leaves replies unread; output by
 * --client-output-limit, checked before each request acts (one small request can
 * ask for a large reply, so checking once per chunk is not enough; a client holds
 * at most the limit plus one reply); time by an
 * idle timeout that counts requests and replies taken, not bytes, so a client
 * dribbling a frame that never ends is as idle as a silent one.
 */
import type { Socket } from 'node:net';
import { Decoder, type ProtocolError } from '../protocol/decoder.js';
import { error } from '../protocol/encoder.js';
import { readInto } from './socket-reads.js';
import { destroyAfter } from './linger.js';
import { execute, newSession, type CommandStats, type Services, type Session } from '../commands/index.js';

export interface ConnectionLimits {
  /** Milliseconds without progress before the connection is closed; 0 = never. */
  readonly idleTimeoutMs: number;
  /** Unsent reply bytes a client may leave unread before it is cut off. */
  readonly outputLimit: number;
}

export interface ConnectionEvents {
  closed(conn: Connection): void;
  outputLimitExceeded(conn: Connection): void;
  /**
   * Called after each chunk read with how long decoding, executing and writing its
   * requests took (ms). Per chunk rather than per request keeps it cheap.
   */
  chunkHandled?(ms: number): void;
}

/** A reply still waiting for storage; `value` is set when it is ready. */
interface Slot {
  value: string | null;
}

/**
 * The idle timeout is checked this many times per period, so a connection is
 * closed between 1 and 1 + 1/IDLE_CHECKS timeouts after its last progress.
 */
const IDLE_CHECKS = 4;

/** Bytes a reply waiting for storage is counted as, for the output limit: about what it holds. */
const PENDING_COST = 256;

/**
 * After QUIT or a protocol error, how long a client may keep its own side open
 * once our last reply and FIN are out. Closing at once could turn the goodbye
 * into a reset while the client still sends; never closing would let a
 * half-open client hold a connection slot for good.
 */
const HANGUP_LINGER_MS = 1000;

export class Connection {
  private readonly decoder = new Decoder();
  private readonly session: Session = newSession(() => this.socket.destroyed);
  /** Replies still waiting for storage (their requests are in the sequence core's queue). */
  private waiting = 0;
  /** Replies ready to write, concatenated. */
  private out = '';
  /** Replies behind one that still waits, in order; strings are ready. */
  private queue: Array<string | Slot> = [];
  private queueHead = 0;
  /** Bytes of ready replies (in `out` or the queue) not yet handed to the socket. */
  private owed = 0;
  /** How many more reply bytes fit under the output limit; set per chunk. */
  private room = 0;
  /**
   * No more requests are served: QUIT, a protocol error, the client's FIN, or
   * shutdown. Input is still read, and dropped: a paused socket would not see the
   * client's FIN behind unread bytes and would linger until the idle timeout.
   */
  private stopped = false;
  private closed = false;
  private drainWaiters: Array<() => void> = [];
  private pumpQueued = false;
  private readonly onFrame = (words: string[]): void => this.handle(words);
  /** Requests read plus drains of the reply backlog: what counts as not idle. */
  private progress = 0;
  private progressAtCheck = 0;
  private idleChecks = 0;
  private readonly idleTimer: NodeJS.Timeout | null = null;
  /** Whether this socket is read through the lean path (socket-reads.ts). */
  readonly leanReads: boolean;

  constructor(
    readonly socket: Socket,
    private readonly services: Services,
    private readonly stats: CommandStats,
    private readonly limits: ConnectionLimits,
    private readonly events: ConnectionEvents,
  ) {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    if (limits.idleTimeoutMs > 0) {
      this.idleTimer = setInterval(() => this.checkIdle(), Math.max(1, Math.ceil(limits.idleTimeoutMs / IDLE_CHECKS)));
      this.idleTimer.unref();
    }
    this.leanReads = readInto(socket, (chunk) => this.onData(chunk));
    socket.on('drain', () => {
      this.progress++;
      socket.resume();
    });
    socket.on('error', () => {
      // Resets and the like: 'close' follows and does the cleanup.
    });
    socket.on('end', () => {
      // The client finished sending; answer what it sent, then close our side.
      this.stopped = true;
      this.whenIdle(() => socket.end());
    });
    socket.on('close', () => {
      this.closed = true;
      this.stopped = true;
      // Requests still waiting for storage leave the queue now, so CURRENT stops counting them.
      if (this.waiting > 0) this.services.source.forget?.(this.session);
      if (this.idleTimer !== null) clearInterval(this.idleTimer);
      this.notifyIdle();
      events.closed(this);
    });
  }

  /** Stops serving and closes the socket once every reply already owed is written. */
  shutdown(): Promise<void> {
    this.stopped = true;
    return new Promise((resolve) => {
      if (this.closed) return resolve();
      this.socket.once('close', () => resolve());
      this.whenIdle(() => this.socket.end());
    });
  }

  private onData(chunk: Buffer): void {
    if (this.stopped) return;
    const observe = this.events.chunkHandled;
    const started = observe === undefined ? 0 : performance.now();
    this.room = this.limits.outputLimit - this.socket.writableLength;
    const err = this.decoder.feed(chunk, this.onFrame);
    if (err !== null) this.protocolError(err);
    this.flush();
    if (observe !== undefined) observe(performance.now() - started);
  }

  private handle(words: string[]): void {
    if (this.stopped) return;
    this.progress++;
    // Cut off once what is owed already reaches the limit, before the request acts
    // (its reply would be dropped, and a number it took skipped). Not when a reply
    // would pass the limit: one may be larger than it (PING echoes up to 64 KiB,
    // INFO can reach a megabyte), so a client holds at most the limit plus one reply.
    if (this.owed >= this.room) {
      this.cutOff();
      return;
    }
    const reply = execute(words, this.session, this.services, this.stats);
    // A waiting reply holds memory here and in the core before it has a byte to
    // show: it counts against the output limit too, or a client could pipeline
    // without bound while storage is slow.
    this.append(typeof reply === 'string' ? reply : this.slotFor(reply));
    if (this.session.quit) this.hangUp();
  }

  private protocolError(err: ProtocolError): void {
    // Bytes after QUIT (or a cut-off) in the same chunk are not answered, malformed or not.
    if (this.stopped) return;
    const reply = error('ERR', err.message);
    this.stats.countError(reply);
    this.append(reply);
    this.hangUp();
  }

  /** Serves nothing more and closes the connection once the replies owed are written. */
  private hangUp(): void {
    this.stopped = true;
    // The grace period starts once every reply is out, so none is cut off by it.
    this.whenIdle(() => this.socket.end(() => destroyAfter(this.socket, HANGUP_LINGER_MS)));
  }

  /** Every reply so far has left the queue (it may still sit in `out`). */
  private get drained(): boolean {
    return this.queueHead === this.queue.length;
  }

  /**
   * Puts a reply behind those owed: straight into `out` when nothing waits before
   * it. A reply still waiting for storage is owed PENDING_COST until it is ready.
   */
  private append(item: string | Slot): void {
    if (typeof item === 'string') {
      if (this.drained) this.out += item;
      else this.queue.push(item);
      this.owed += item.length;
    } else {
      this.queue.push(item);
      this.owed += PENDING_COST;
    }
  }

  /** A queue slot that a reply still waiting for storage fills when it is ready. */
  private slotFor(reply: Promise<string>): Slot {
    const slot: Slot = { value: null };
    this.waiting++;
    reply.then((value) => {
      this.waiting--;
      // Nobody will read it (a request of a gone connection is refused unseen): nothing to count or write.
      if (this.socket.destroyed) return;
      if (value.charCodeAt(0) === 45 /* '-' */) this.stats.countError(value);
      slot.value = value;
      this.owed += value.length - PENDING_COST;
      this.schedulePump();
    });
    return slot;
  }

  /** The client asked for more than it may leave unread: drop it and everything owed to it. */
  private cutOff(): void {
    this.stopped = true;
    this.out = '';
    this.queue = [];
    this.queueHead = 0;
    this.owed = 0;
    this.events.outputLimitExceeded(this);
    this.socket.destroy();
  }

  /**
   * One store write releases many waiting replies at once, each in its own
   * promise callback: gather them all into one socket write, after the last.
   */
  private schedulePump(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    queueMicrotask(this.pumpNow);
  }

  private readonly pumpNow = (): void => {
    this.pumpQueued = false;
    this.pump();
  };

  /** Moves ready replies from the head of the queue to the output, then writes. */
  private pump(): void {
    const q = this.queue;
    let i = this.queueHead;
    while (i < q.length) {
      const item = q[i]!;
      if (typeof item === 'string') this.out += item;
      else if (item.value !== null) this.out += item.value;
      else break;
      i++;
    }
    if (i === q.length) {
      this.queue = [];
      this.queueHead = 0;
    } else {
      this.queueHead = i;
    }
    this.flush();
  }

  private flush(): void {
    if (this.out.length > 0 && !this.socket.destroyed) {
      const unsentBefore = this.socket.writableLength;
      const ok = this.socket.write(this.out, 'latin1');
      this.owed -= this.out.length;
      this.out = '';
      if (!ok) {
        // Replies that waited for storage are not counted against `room` as they are made.
        // As in handle(): what was unsent before this write must reach the limit.
        if (unsentBefore >= this.limits.outputLimit) {
          this.cutOff();
          return;
        }
        // Stop reading from a client that is not reading its replies.
        this.socket.pause();
      }
    }
    if (this.drained) this.notifyIdle();
  }

  private checkIdle(): void {
    if (this.progress !== this.progressAtCheck || !this.drained) {
      // A reply still waiting for storage is the server's delay, not the client's.
      this.progressAtCheck = this.progress;
      this.idleChecks = 0;
    } else if (++this.idleChecks >= IDLE_CHECKS) {
      this.socket.destroy();
    }
  }

  /** Runs `fn` once every reply owed so far has been handed to the socket. */
  private whenIdle(fn: () => void): void {
    if (this.closed || (this.drained && this.out.length === 0)) {
      fn();
      return;
    }
    this.drainWaiters.push(fn);
  }

  private notifyIdle(): void {
    if (this.drainWaiters.length === 0) return;
    const ws = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of ws) w();
  }
}
