/**
 * One client socket: bytes -> decoder -> commands -> replies, in request order.
 * Replies for one chunk of pipelined requests leave in a single write. A reply
 * that waits for storage holds back the ones behind it, so order is kept.
 *
 * What one client may cost is bounded: input by the decoder's limits and by
 * pausing reads while the client leaves replies unread; output by
 * --client-output-limit, checked after each request acts (one small request can
 * ask for a large reply, so checking once per chunk is not enough): at the limit
 * the connection takes no more requests, not even those already read, until the
 * client has read what it is owed, so it holds at most the limit plus one reply;
 * time by an idle timeout that counts requests and replies taken, not bytes, so a
 * client dribbling a frame that never ends is as idle as a silent one.
 */
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { Decoder, type ProtocolError } from '../protocol/decoder.js';
import { error } from '../protocol/encoder.js';
import { SHUTTING_DOWN_MESSAGE } from '../protocol/refusals.js';
import { readInto } from './socket-reads.js';
import { destroyAfter } from './linger.js';
import { execute, newSession, refusedWhileStopping, type CommandStats, type Services, type Session } from '../commands/index.js';

export interface ConnectionLimits {
  /** Milliseconds without progress before the connection is closed; 0 = never. */
  readonly idleTimeoutMs: number;
  /**
   * Reply bytes owed to a client (unsent, or still waiting for storage) at which
   * it is served nothing more until it has read them.
   */
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

/** A reply still waiting for storage (`value` is set when it is ready), or to be made in its turn (`later`). */
interface Slot {
  value: string | null;
  readonly later?: () => string;
}

/**
 * The idle timeout is checked this many times per period, so a connection is
 * closed between 1 and 1 + 1/IDLE_CHECKS timeouts after its last progress.
 */
const IDLE_CHECKS = 4;

/** Bytes a reply waiting for storage is counted as, for the output limit: about what it holds. */
const PENDING_COST = 256;

/**
 * After QUIT, a protocol error or a clean stop, how long a client may keep its own side open
 * once our last reply and FIN are out. Closing at once could turn the goodbye
 * into a reset while the client still sends; never closing would let a
 * half-open client hold a connection slot for good.
 */
const HANGUP_LINGER_MS = 1000;

const EMPTY = Buffer.alloc(0);

/**
 * After a clean stop began, a connection stays open until no request has arrived
 * for this long, refusing what arrives: a request already on its way when the stop
 * began gets an answer that says nothing was done, not a closed connection that
 * leaves its fate unknown. Long enough for a request in flight on a local network.
 */
const STOP_QUIET_MS = 20;

/** ...and at most this long, for a client that keeps sending whatever it is told. */
const STOP_REFUSE_MAX_MS = 500;

const SHUTTING_DOWN_REPLY = error('ERR', SHUTTING_DOWN_MESSAGE);

/**
 * A reply this long (INFO with hundreds of sequences, a 64 KiB PING) took real work
 * to make: the requests behind it wait for the next turn of the event loop, so that
 * a pipeline of them cannot keep other clients waiting for the whole of it.
 */
const BIG_REPLY = 64 * 1024;

export class Connection {
  private readonly decoder = new Decoder();
  private readonly session: Session;
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
   * At the output limit: requests already read wait in the decoder, and no more are
   * read, until the client has taken enough of its replies (see resumeIfRoom).
   */
  private held = false;
  /** The client's FIN came while requests read before were held. */
  private endWhileHeld = false;
  /** Held after a big reply until the next turn of the event loop, whatever the room. */
  private yielding = false;
  /** Held behind a reply to be made in its turn until it is made (see handle). */
  private unmade = false;
  /**
   * No more requests are served: QUIT, a protocol error, the client's FIN, or
   * shutdown. Input is still read, and dropped: a paused socket would not see the
   * client's FIN behind unread bytes and would linger until the idle timeout.
   */
  private stopped = false;
  /** A clean stop began (shutdown); while held, the requests read before it are served first. */
  private stopRequested = false;
  /** Requests read from now on are refused (see STOP_QUIET_MS). */
  private refusing = false;
  /** Resolves shutdown()'s `answered`. */
  private onAnswered: (() => void) | null = null;
  private refuseTimer: NodeJS.Timeout | null = null;
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
    this.session = newSession(() => this.socket.destroyed, socket instanceof TLSSocket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    if (limits.idleTimeoutMs > 0) {
      this.idleTimer = setInterval(() => this.checkIdle(), Math.max(1, Math.ceil(limits.idleTimeoutMs / IDLE_CHECKS)));
      this.idleTimer.unref();
    }
    this.leanReads = readInto(socket, (chunk) => this.onData(chunk));
    socket.on('drain', () => {
      this.progress++;
      if (this.held) this.resumeIfRoom();
      else socket.resume();
    });
    socket.on('error', () => {
      // Resets and the like: 'close' follows and does the cleanup.
    });
    socket.on('end', () => {
      // The client finished sending; answer what it sent, then close our side.
      if (this.held) this.endWhileHeld = true;
      else this.endOfInput();
    });
    socket.on('close', () => {
      this.closed = true;
      this.stopped = true;
      // Requests still waiting for storage leave the queue now, and a CURRENT behind them is answered without them.
      if (this.waiting > 0) this.services.source.forget?.(this.session);
      if (this.idleTimer !== null) clearInterval(this.idleTimer);
      if (this.refuseTimer !== null) clearTimeout(this.refuseTimer);
      this.notifyIdle();
      events.closed(this);
    });
  }

  /**
   * Begins a clean stop: answers what was read (requests held at the output limit
   * too, as the client reads), then refuses what arrives until the client is quiet
   * or closes its side, and closes the socket once every reply is written.
   * `answered` resolves once every request read before the stop is answered (or the
   * connection is gone): from then on nothing here needs the sequence source.
   */
  shutdown(): { answered: Promise<void>; closed: Promise<void> } {
    if (this.closed) return { answered: Promise.resolve(), closed: Promise.resolve() };
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    const answered = new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.onAnswered = resolve;
    });
    this.stopRequested = true;
    // Held, its requests are served as the client reads, and resumeIfRoom moves on from there.
    if (!this.held) {
      if (this.stopped) this.endOfInput();
      else this.refuseUntilQuiet();
    }
    return { answered, closed };
  }

  private refuseUntilQuiet(): void {
    if (this.refusing) return;
    this.refusing = true;
    this.whenIdle(() => this.onAnswered?.());
    const until = performance.now() + STOP_REFUSE_MAX_MS;
    let seen = this.progress;
    const decide = (): void => {
      if (this.stopped) return;
      // Paused for back-pressure, the socket may hold requests not read yet: not quiet.
      const busy = this.progress !== seen || this.held || this.socket.isPaused();
      if (busy && performance.now() < until) {
        seen = this.progress;
        this.refuseTimer = setTimeout(check, STOP_QUIET_MS);
        return;
      }
      if (this.held) this.endWhileHeld = true;
      else this.endOfInput();
    };
    // Decided after this turn's reads: on a loop late for its timer, a request that
    // arrived meanwhile is read first and counts, rather than lost behind our FIN.
    const check = (): void => {
      this.refuseTimer = null;
      setImmediate(decide);
    };
    this.refuseTimer = setTimeout(check, STOP_QUIET_MS);
  }

  private onData(chunk: Buffer): void {
    if (this.stopped) return;
    const observe = this.events.chunkHandled;
    const started = observe === undefined ? 0 : performance.now();
    this.serve(chunk);
    // The socket may have taken the replies at once: then there is room already.
    if (this.held && !this.yielding) this.resumeIfRoom();
    if (observe !== undefined) observe(performance.now() - started);
  }

  /** Decodes and executes what `chunk` (with what the decoder carries) holds, then writes the replies. */
  private serve(chunk: Buffer): void {
    this.room = this.limits.outputLimit - this.socket.writableLength;
    // Owed may have grown since the last chunk (a waiting reply larger than counted).
    if (this.owed >= this.room && !this.held) this.hold();
    const err = this.decoder.feed(chunk, this.onFrame);
    if (err !== null) this.protocolError(err);
    this.flush();
  }

  private handle(words: string[]): void {
    if (this.stopped) return;
    this.progress++;
    if (this.refusing && refusedWhileStopping(words, this.session)) {
      this.refuse();
      return;
    }
    const reply = execute(words, this.session, this.services, this.stats);
    // A waiting reply holds memory here and in the core before it has a byte to
    // show: it counts against the output limit too, or a client could pipeline
    // without bound while storage is slow.
    const item =
      typeof reply === 'string' ? reply
      : typeof reply === 'function' ? (this.drained ? reply() : { value: null, later: reply })
      : this.slotFor(reply);
    this.append(item);
    if (this.session.quit) this.hangUp();
    // A reply made in its turn has no size yet: counted at PENDING_COST, thousands of
    // INFOs could be owed unmade. The requests behind it wait until it is made (pump).
    else if (typeof item !== 'string' && item.later !== undefined) {
      this.hold();
      this.unmade = true;
    }
    // Checked after the request acts, so one reply may pass the limit on its own
    // (PING echoes up to 64 KiB, INFO can reach a megabyte): a client is owed at
    // most the limit plus one reply, and one that reads is never dropped.
    else if (this.owed >= this.room) this.hold();
    else if (typeof item === 'string' && item.length >= BIG_REPLY) this.yieldTurn();
  }

  /** A request read after a clean stop began: nothing is done with it, and the client is told so. */
  private refuse(): void {
    this.stats.countError(SHUTTING_DOWN_REPLY);
    this.append(SHUTTING_DOWN_REPLY);
    if (this.owed >= this.room) this.hold();
  }

  /** Serves the rest of what was read on the next turn of the event loop, after other clients. */
  private yieldTurn(): void {
    this.hold();
    this.yielding = true;
    setImmediate(() => {
      this.yielding = false;
      this.resumeIfRoom();
    });
  }

  private readonly wake = (): void => {
    if (this.held) this.resumeIfRoom();
  };

  /** At the output limit: take no more requests from this client until it reads. */
  private hold(): void {
    this.held = true;
    this.decoder.hold();
    this.socket.pause();
  }

  /**
   * Serves the held requests once the client has read enough: what it is owed is
   * down to half the limit, so that a client reading steadily is not stopped and
   * started again at every reply.
   */
  private resumeIfRoom(): void {
    // A loop, not recursion: each pass serves held requests up to the limit again,
    // and the socket may take their replies at once.
    let released = false;
    while (this.held && !this.yielding && !this.unmade && !this.stopped && this.owed + this.socket.writableLength <= this.limits.outputLimit / 2) {
      this.held = false;
      released = true;
      this.decoder.release();
      this.serve(EMPTY);
    }
    if (!released || this.held || this.stopped) return;
    if (this.endWhileHeld) {
      this.endOfInput();
      return;
    }
    // Released after a clean stop began: what it read before is served, and what comes next is refused.
    if (this.stopRequested) this.refuseUntilQuiet();
    this.socket.resume();
  }

  private endOfInput(): void {
    this.stop();
    if (!this.stopRequested) {
      this.whenIdle(() => this.socket.end());
      return;
    }
    this.whenIdle(() => {
      this.onAnswered?.();
      // A client that keeps its side open after ours (an idle pooled connection, a
      // redis-cli waiting for input) would hold a stopping server for its whole grace period.
      this.socket.end(() => destroyAfter(this.socket, HANGUP_LINGER_MS));
    });
  }

  /**
   * Serves no more requests. What the client still sends is read and dropped: left
   * unread (a held or paused socket), it would turn our close into a reset, and
   * the kernel would throw away replies already written but not yet delivered.
   */
  private stop(): void {
    this.stopped = true;
    this.socket.resume();
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
    this.stop();
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

  /** The client leaves more than the limit unread: drop it and everything owed to it. */
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
      else if (item.later !== undefined) {
        const value = item.later();
        this.owed += value.length - PENDING_COST;
        this.out += value;
        this.unmade = false;
      } else break;
      i++;
    }
    if (i === q.length) {
      this.queue = [];
      this.queueHead = 0;
    } else {
      this.queueHead = i;
    }
    this.flush();
    this.resumeIfRoom();
  }

  private flush(): void {
    if (this.out.length > 0 && !this.socket.destroyed) {
      const unsentBefore = this.socket.writableLength;
      // While held, each write says when it is done: 'drain' alone may never come,
      // as a write under the socket's high-water mark (64 KiB from Node.js 22 on)
      // does not ask for it, however long the bytes wait for the client.
      const ok = this.held ? this.socket.write(this.out, 'latin1', this.wake) : this.socket.write(this.out, 'latin1');
      this.owed -= this.out.length;
      this.out = '';
      if (!ok) {
        // The one way past the limit: replies released by storage, each counted at
        // PENDING_COST while it waited, may be longer (an error naming a path), and
        // the client was no longer read from, so only it can stop them by reading.
        // One that still has the limit unread when more arrive is dropped, rather
        // than let them pile up.
        if (unsentBefore >= this.limits.outputLimit) {
          this.cutOff();
          return;
        }
        // Stop reading from a client that is not reading its replies (but one that
        // is served no more: its input is dropped, see stop()).
        if (!this.stopped) this.socket.pause();
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
