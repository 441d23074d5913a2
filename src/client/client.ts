/**
 * SequencerClient: the library other services use to get numbers.
 *
 * One connection at a time, shared by all calls (pipelined). It is opened
 * lazily, authenticated first when a password is set, and reopened on demand
 * after a failure, trying the servers in order with exponential backoff.
 * `-NOTLEADER` replies are followed to the leader.
 *
 * Retries: a request that never left this process, or one answered
 * `-NOTLEADER` (nothing was issued), is sent again. CURRENT, PING and INFO are
 * also sent again when the connection drops before their reply. GETSEQ and
 * GETSEQ_BATCH whose reply was lost (timeout, or connection closed after
 * sending) are never re-sent: the server may have issued the numbers, and a
 * silent retry would hide that. The call fails instead; the numbers are
 * skipped (a gap), never handed out twice.
 */
import { setMaxListeners } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import type tls from 'node:tls';
import { ConfigError } from '../errors.js';
import { MAX_TIMER_MS, MAX_VALUE, MAX_WORD_BYTES, checkName } from '../core/limits.js';
import { bytesAsUtf8, type Reply } from '../protocol/reply-decoder.js';
import { type Address, DEFAULT_PORT, formatAddress, parseAddress } from '../protocol/address.js';
import { isRetryRefusal } from '../protocol/refusals.js';
import { SequenceAllocator, type AllocatorOptions } from './allocator.js';
import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay } from './backoff.js';
import { ServerCertificateRejectedError, Connection, certificateRefusalIn, describeReply } from './connection.js';
import {
  ConnectionClosedError,
  NoServerAvailableError,
  NotLeaderError,
  ReplyProtocolError,
  ServerError,
  TimeoutError,
  fromWire,
} from './errors.js';
import { type ServerInfo, parseInfo } from './info.js';

export interface SequencerClientOptions {
  /** `host:port` of every server (every group member); tried in order. Default `['127.0.0.1:10001']`. */
  readonly servers?: readonly string[];
  /** Sent with AUTH first on every new connection. */
  readonly password?: string;
  /** Connect with TLS; `true` for the system's CAs and default checks; `false` or absent for plain TCP. */
  readonly tls?: tls.ConnectionOptions | boolean;
  /** Per connection attempt, TLS handshake and AUTH included. Default 3000. */
  readonly connectTimeoutMs?: number;
  /**
   * Per call, from the call to its result: waiting for a connection,
   * redirects and retries all count. Default 5000.
   */
  readonly requestTimeoutMs?: number;
  /**
   * Hops per call before giving up with NotLeaderError: a member the call was
   * sent to answering NOTLEADER with yet another leader. A NOTLEADER naming no
   * leader, or naming again a leader that did not answer (it just died, and
   * the others name it until its lease runs out), is not a hop: the call waits
   * for the election until its timeout. Default 5.
   */
  readonly maxRedirects?: number;
  /**
   * Delays between rounds of connection attempts. `false`: no waiting; a call
   * whose connection attempt fails or is refused retries at most as many times
   * as there are servers, then fails (what a command-line tool wants). Default
   * 50..2000 ms.
   */
  readonly reconnect?: Partial<BackoffOptions> | false;
}

/** `first .. first+count-1` belong to the caller. */
export interface Batch {
  readonly first: bigint;
  readonly count: bigint;
}

/** Where one call's NOTLEADER replies have sent it. */
interface Route {
  /** Members that named another leader after the call was sent to them (or first asked). */
  readonly hops: string[];
  /** Every leader named to the call. */
  readonly named: Set<string>;
  /** The leader the call was last sent to. */
  following: string | null;
  /**
   * The slowest NOTLEADER the call has had from each server (host:port), from sending
   * to the answer: what a last try there before the deadline needs. Per server, so
   * that one that answered late (paused, then resumed) costs no try on the others.
   */
  readonly slowestMs: Map<string, number>;
  /** Servers that refused this call's certificate after accepting its connection: a second visit waits a backoff step. */
  readonly refusedCertificate: Set<string>;
  /** When the call began (performance.now()): certificate problems from then on are this call's. */
  readonly started: number;
  /** Certificate problems of named leaders this call has met, by when each was recorded (see redirect). */
  readonly leaderCertificateProblems: Set<number>;
}

/** May the command be sent again after its reply was lost? */
const enum Resend {
  /** It issues numbers: a lost reply may mean numbers were issued. */
  Never,
  /** It changes nothing on the server. */
  Safe,
}

/**
 * The least time worth one more try after a backoff pause, and at least twice the
 * slowest reply the call had from the server that answers quickest (the try may
 * need a new connection as well): a try cut off by the deadline would fail as a
 * timeout, which says less than the NOTLEADER it would have got.
 */
const LAST_TRY_MS = 50;

/**
 * The least of the listed servers' slowest NOTLEADERs in this call, a server not
 * asked yet counting as quick: the room a last try needs on the best server left.
 */
function quickestServerMs(servers: readonly Address[], route: Route): number {
  let least = Infinity;
  for (const s of servers) least = Math.min(least, route.slowestMs.get(formatAddress(s)) ?? 0);
  return least === Infinity ? 0 : least;
}

/** Why a named leader that does not answer is no reason to give up at once, and what else to check. */
const namedButSilent = (leader: string): string =>
  'a leader that just failed is named until its lease runs out, so a new one is probably being elected; ' +
  `retry shortly, or check that ${leader} is the address that member advertises (--advertise)`;

export class SequencerClient {
  private readonly servers: readonly Address[];
  private readonly password: string | undefined;
  private readonly tls: tls.ConnectionOptions | null;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly maxRedirects: number;
  private readonly backoff: BackoffOptions | null;

  private connection: Connection | null = null;
  /**
   * Every connection not yet closed: the current one, and those left for
   * another server (NOTLEADER, a failed request) that still owe replies.
   */
  private readonly live = new Set<Connection>();
  /** The connection attempt under way, shared by every call that waits for it. */
  private connecting: Promise<Connection> | null = null;
  /** Calls waiting for `connecting`; the attempts stop when none is left. */
  private waiting = 0;
  /** Index in `servers` where the next round of attempts starts. */
  private preferred = 0;
  /** A leader named by NOTLEADER: tried before `servers` in the next round. */
  private redirectTarget: Address | null = null;
  /**
   * A redirect target that could not be reached, and until when it is not made
   * one again: a leader whose host died is named by the others until its lease
   * runs out, and dialling it on every retry would spend connectTimeoutMs each
   * time (where packets are dropped) while the election completes elsewhere.
   */
  private unreachable: { readonly address: string; readonly until: number } | null = null;
  private lastConnectError: unknown = null;
  /** Servers the connection attempts under way have tried, for the error that says none answered. */
  private readonly tried = new Set<string>();
  /**
   * The last certificate problem with each server, by host:port, until a connection
   * to it succeeds: this client rejecting its certificate, or it refusing this
   * client's. Calls and rounds read only the problems from their own time on.
   */
  private readonly certificateProblems = new Map<string, { at: number; error: Error }>();
  private readonly closing = new AbortController();

  constructor(options?: SequencerClientOptions);
  /** The seed's form: one server. */
  constructor(host: string, port?: number, options?: Omit<SequencerClientOptions, 'servers'>);
  constructor(
    first: SequencerClientOptions | string = {},
    port?: number,
    rest: Omit<SequencerClientOptions, 'servers'> = {},
  ) {
    const options: SequencerClientOptions =
      typeof first === 'string' ? { ...rest, servers: [formatAddress({ host: first, port: port ?? DEFAULT_PORT })] } : first;
    const servers = options.servers ?? [`127.0.0.1:${DEFAULT_PORT}`];
    if (servers.length === 0) throw new ConfigError('servers', 'give at least one host:port');
    this.servers = servers.map((text) => {
      const address = parseAddress(text);
      if (address === null) throw new ConfigError('servers', `'${text}' is not host:port (port 1-65535)`);
      return address;
    });
    if (options.password !== undefined && Buffer.byteLength(options.password) > MAX_WORD_BYTES) {
      throw new ConfigError('password', `is longer than a server reads in one word (${MAX_WORD_BYTES} bytes)`);
    }
    this.password = options.password;
    this.tls = options.tls === undefined || options.tls === false ? null : options.tls === true ? {} : options.tls;
    this.connectTimeoutMs = positive('connectTimeoutMs', options.connectTimeoutMs ?? 3000);
    this.requestTimeoutMs = positive('requestTimeoutMs', options.requestTimeoutMs ?? 5000);
    this.maxRedirects = options.maxRedirects ?? 5;
    if (!Number.isInteger(this.maxRedirects) || this.maxRedirects < 0) {
      throw new ConfigError('maxRedirects', 'must be a whole number, 0 or more');
    }
    this.backoff = options.reconnect === false ? null : reconnectOption({ ...DEFAULT_BACKOFF, ...options.reconnect });
    // Every call sleeping between retries listens for close(): many at once in an outage is normal, not a leak.
    setMaxListeners(0, this.closing.signal);
  }

  /**
   * The next number of sequence `name` (default `default`). A name the server
   * would refuse rejects with RangeError, and nothing is sent.
   */
  async getNextSequence(name?: string): Promise<bigint> {
    return this.execute(withName(['GETSEQ'], name), Resend.Never, 'integer', integerOf);
  }

  /** The number the next GETSEQ will return; nothing changes. */
  async current(name?: string): Promise<bigint> {
    return this.execute(withName(['CURRENT'], name), Resend.Safe, 'integer', integerOf);
  }

  /** Takes `count` numbers at once: the caller owns `first .. first+count-1`. */
  async getBatch(count: number | bigint, name?: string): Promise<Batch> {
    if (typeof count !== 'number' && typeof count !== 'bigint') {
      throw new TypeError(`getBatch count must be a number or a bigint, got ${typeof count}`);
    }
    if (typeof count === 'number' && !Number.isSafeInteger(count)) {
      throw new RangeError(`getBatch count must be a whole number up to 2^53-1 (a bigint for more), got ${count}`);
    }
    const n = BigInt(count);
    if (n < 1n) throw new RangeError(`getBatch count must be at least 1, got ${n}`);
    const first = await this.execute(withName(['GETSEQ_BATCH', String(n)], name), Resend.Never, 'integer', integerOf);
    return { first, count: n };
  }

  async ping(): Promise<void> {
    await this.execute(['PING'], Resend.Safe, 'simple', (r) => (r.type === 'simple' && r.value === 'PONG' ? true : undefined));
  }

  /** The server's INFO, parsed; `raw` keeps the text as sent. */
  info(): Promise<ServerInfo> {
    return this.execute(['INFO'], Resend.Safe, 'bulk', (r) => (r.type === 'bulk' && r.value !== null ? parseInfo(bytesAsUtf8(r.value)) : undefined));
  }

  /** A local range cache over this client; see SequenceAllocator for what it trades away. */
  allocator(options?: AllocatorOptions): SequenceAllocator {
    return new SequenceAllocator(this, options);
  }

  /**
   * Stops: new calls fail at once, calls waiting for a connection fail, and
   * requests already sent get their replies (or time out) before the sockets close,
   * those of connections already left for another server included.
   */
  async close(): Promise<void> {
    this.closing.abort();
    this.connection = null;
    const open = [...this.live];
    for (const connection of open) connection.retire();
    await Promise.all([...open.map((c) => c.closed), this.connecting?.catch(() => {})]);
  }

  private get closed(): boolean {
    return this.closing.signal.aborted;
  }

  /**
   * Sends one command until it gets a reply `parse` accepts, following
   * NOTLEADER and resending where that is safe, all within requestTimeoutMs.
   */
  private async execute<T>(
    words: string[],
    resend: Resend,
    expected: Reply['type'],
    parse: (reply: Reply) => T | undefined,
  ): Promise<T> {
    const started = performance.now();
    const deadline = started + this.requestTimeoutMs;
    const route: Route = { hops: [], named: new Set(), following: null, slowestMs: new Map(), refusedCertificate: new Set(), started, leaderCertificateProblems: new Set() };
    // Without reconnecting, a call still retries once per server (a full one, or one that drops the connection, is left for the next).
    let attemptsLeft = this.backoff === null ? this.servers.length : Infinity;
    for (let attempt = 0; ; attempt++) {
      const connection = this.connection?.usable ? this.connection : await this.connect(deadline, () => this.ranOutError(route));
      let reply: Reply;
      const sentAt = performance.now();
      try {
        // Only a call that gave the server at least half a timeout shows that it stalls; one
        // that spent most of its time waiting for the connection fails alone, and the calls
        // behind it keep their chance.
        const left = deadline - sentAt;
        reply = await connection.send(words, Math.max(1, left), left * 2 >= this.requestTimeoutMs, expected);
      } catch (err) {
        this.avoid(connection);
        const refusal = certificateRefusalIn(err);
        if (refusal !== null) {
          // As for a server certificate this client rejects (connectRounds): another server may
          // take it (one member set up wrong), but once every one has refused it, waiting cannot help.
          // Per call: the shared record loses the entry whenever a connection there succeeds,
          // which a server refusing after the handshake lets every one do.
          const again = route.refusedCertificate.has(connection.address);
          route.refusedCertificate.add(connection.address);
          this.certificateProblem(connection.address, refusal);
          if (this.closed || this.everyServerHasCertificateProblem(started)) throw this.noServerError(started);
          if (--attemptsLeft <= 0) throw this.ranOutError(route);
          // Sent back to a server that refused already (a leader named, say): not in a tight loop.
          if (again && this.backoff !== null) await this.pause(attempt, deadline, route, this.ranOutError(route));
          continue;
        }
        const retry = err instanceof ConnectionClosedError && (!err.requestSent || resend === Resend.Safe);
        if (!retry || this.closed || --attemptsLeft <= 0) throw err;
        // A server that accepts and then drops every connection must not be hammered.
        if (this.backoff !== null) await this.pause(attempt, deadline, route, err);
        continue;
      }
      if (reply.type === 'error') {
        if (isRetryRefusal(reply.code, reply.message)) {
          // Nothing was done (no number issued): another server, or this one shortly, may serve it.
          const refusal = fromWire(reply.code, reply.message);
          this.avoid(connection);
          this.leave(connection);
          if (this.closed || --attemptsLeft <= 0) throw refusal;
          await this.pause(attempt, deadline, route, refusal);
          continue;
        }
        if (reply.code !== 'NOTLEADER') throw fromWire(reply.code, reply.message);
        // Timed only here, off the path of a served call: only a retry needs it (see pause).
        route.slowestMs.set(connection.address, Math.max(route.slowestMs.get(connection.address) ?? 0, performance.now() - sentAt));
        await this.redirect(connection, reply.message, route, attempt, deadline);
        continue;
      }
      const result = parse(reply);
      if (result === undefined) {
        // Of the right kind but not a value this command answers (a PING answered +OK): as for
        // the wrong kind (see Connection.send), the server is not one to keep using.
        const problem = `unexpected ${describeReply(reply)} in reply to ${words[0]}`;
        this.avoid(connection);
        if (this.connection === connection) this.connection = null;
        connection.abandon(`${connection.address} sent an ${problem}`);
        throw new ReplyProtocolError(connection.address, problem);
      }
      return result;
    }
  }

  /**
   * Leaves a connection whose server is not the leader. A named leader is
   * followed at once; each time the server a call was sent to names yet
   * another, that is a hop, and more than maxRedirects hops mean the members
   * disagree. When no leader is named, or the one named did not answer (the
   * call landed on another member, which names it again), an election or a
   * new leader's start is probably under way: the call waits a backoff step
   * and tries again, until its deadline.
   */
  private async redirect(from: Connection, leaderText: string, route: Route, attempt: number, deadline: number): Promise<void> {
    const leader = leaderText === '' ? null : parseAddress(leaderText);
    if (this.leave(from)) {
      if (leader !== null && !this.recentlyUnreachable(leader)) this.redirectTarget = leader;
      else this.preferred = (this.indexOf(from.address) + 1) % this.servers.length;
    }
    if (leader === null) {
      await this.pause(attempt, deadline, route, new NotLeaderError(null));
      return;
    }
    const name = formatAddress(leader);
    const sentThere = route.hops.length === 0 || from.address === route.following;
    const namedBefore = route.named.has(name);
    route.following = name;
    route.named.add(name);
    if (!sentThere) {
      // Not a hop: the leader this call was sent to did not answer it, and a
      // leader that died is still named by the others until its lease runs out.
      if (namedBefore) {
        // The named leader's certificate problem, met twice with a backoff step between:
        // a leader that changed in that time would have served, and one that did not
        // will not take this certificate (or present one this client takes) by the deadline.
        const problem = this.certificateProblemSince(name, route.started);
        if (problem !== undefined) {
          route.leaderCertificateProblems.add(problem.at);
          if (route.leaderCertificateProblems.size >= 2) {
            throw new NotLeaderError(
              name,
              `the leader, ${name}, ${certificateTrouble(problem.error)}; ${from.address} names it, so calls fail until that is fixed or another member leads`,
            );
          }
        }
        await this.pause(
          attempt,
          deadline,
          route,
          new NotLeaderError(
            name,
            `${from.address} names ${name} as the leader, but ${this.whyNotAnswered(name, route)}`,
          ),
        );
      }
      return;
    }
    route.hops.push(from.address);
    if (route.hops.length > this.maxRedirects) {
      throw new NotLeaderError(
        name,
        `no leader reached after ${this.maxRedirects} NOTLEADER redirects (${route.hops.join(' -> ')} -> ${name}): ` +
          'the members disagree on who leads, or advertise wrong addresses; retry later, check --advertise, ' +
          'or raise maxRedirects',
      );
    }
  }

  /**
   * Sleeps a backoff step (cut short by close()), or throws `orElse` when too
   * little time is left for another try. A step that would pass the deadline is
   * cut short instead, so that an election ending in the call's last second
   * still serves it.
   */
  private async pause(attempt: number, deadline: number, route: Route, orElse: Error): Promise<void> {
    const delay = backoffDelay(attempt, this.backoff ?? DEFAULT_BACKOFF);
    const room = deadline - performance.now() - Math.max(LAST_TRY_MS, 2 * quickestServerMs(this.servers, route));
    if (room <= 0) throw orElse;
    await sleep(Math.min(delay, room), this.closing.signal);
  }

  /**
   * What a call that runs out of time waiting for a connection fails with. After a member
   * named a leader, a NotLeaderError naming it: a member did answer, so "no server could be
   * reached" would mislead.
   */
  private ranOutError(route: Route): Error {
    const leader = route.following;
    if (leader === null) return this.noServerError();
    return new NotLeaderError(leader, `no leader answered before the request timeout; the last one named was ${leader}, and ${this.whyNotAnswered(leader, route)}`);
  }

  /**
   * Why the named leader gave the call no answer: it refused this client's
   * certificate (a member that trusts another CA), or, most likely, it is gone.
   */
  private whyNotAnswered(leader: string, route: Route): string {
    const problem = this.certificateProblemSince(leader, route.started);
    if (problem !== undefined) return `it ${certificateTrouble(problem.error)}`;
    return `${leader} did not answer in time: ${namedButSilent(leader)}`;
  }

  private certificateProblemSince(address: string, since: number): { at: number; error: Error } | undefined {
    const problem = this.certificateProblems.get(address);
    return problem !== undefined && problem.at >= since ? problem : undefined;
  }

  /** Waits for the shared connection attempt, at most until `deadline`, then fails with `ranOut()`. */
  private connect(deadline: number, ranOut: () => Error): Promise<Connection> {
    if (this.closed) return Promise.reject(clientClosed());
    // Counted first: the rounds check for callers before every attempt.
    this.waiting++;
    const connecting = (this.connecting ??= this.connectRounds());
    return new Promise((resolve, reject) => {
      let done = false;
      const settle = (): boolean => {
        if (done) return false;
        done = true;
        this.waiting--;
        clearTimeout(timer);
        return true;
      };
      const timer = setTimeout(() => {
        if (settle()) reject(ranOut());
      }, Math.max(0, deadline - performance.now()));
      connecting.then(
        (connection) => settle() && resolve(connection),
        (err: unknown) => settle() && reject(err),
      );
    });
  }

  /**
   * Rounds of attempts over the redirect target and the servers in order,
   * with a backoff between rounds, until one connects and authenticates, the
   * client closes, or no call waits any more.
   */
  private async connectRounds(): Promise<Connection> {
    this.tried.clear();
    try {
      for (let round = 0; ; round++) {
        const target = this.redirectTarget;
        const roundStarted = performance.now();
        for (const address of this.candidates()) {
          // Every caller gave up: no more attempts, and no socket opened for nobody.
          // (Never true before the first await: the caller that started the rounds is
          // counted, so `connecting` is set before `finally` clears it.)
          if (this.waiting === 0) throw this.noServerError();
          this.tried.add(formatAddress(address));
          const connection = await this.open(address);
          if (connection !== null) return connection;
          if (this.closed) throw clientClosed();
          if (address === target) {
            this.unreachable = { address: formatAddress(address), until: performance.now() + this.connectTimeoutMs };
          }
        }
        // A certificate refused by every server (this client rejecting theirs, or they refusing
        // this client's) is not cured by waiting, unlike a server still starting, so the call
        // fails after one round instead of at its timeout.
        if (this.backoff === null || this.everyServerHasCertificateProblem(roundStarted)) throw this.noServerError(roundStarted);
        await sleep(backoffDelay(round, this.backoff), this.closing.signal);
        if (this.closed) throw clientClosed();
      }
    } finally {
      this.connecting = null;
    }
  }

  /** A connected, authenticated connection, or null (the reason kept in lastConnectError). */
  private async open(address: Address): Promise<Connection | null> {
    // One budget for the attempt: what the TCP and TLS handshakes took is not AUTH's.
    const deadline = performance.now() + this.connectTimeoutMs;
    let connection: Connection;
    try {
      connection = await Connection.open(address, {
        tls: this.tls,
        connectTimeoutMs: this.connectTimeoutMs,
        signal: this.closing.signal,
        onClose: (c) => {
          if (this.connection === c) this.connection = null;
        },
      });
    } catch (err) {
      this.lastConnectError = err;
      const problem = err instanceof ServerCertificateRejectedError ? err : certificateRefusalIn(err);
      if (problem !== null) this.certificateProblem(formatAddress(address), problem);
      return null;
    }
    if (this.closed) {
      connection.destroy();
      throw clientClosed();
    }
    // close() gives up an AUTH under way too, rather than wait out its timeout.
    const giveUp = (): void => connection.destroy();
    this.closing.signal.addEventListener('abort', giveUp);
    try {
      if (this.password !== undefined) await this.authenticate(connection, deadline);
    } catch (err) {
      connection.destroy();
      // A refused password fails the waiting calls now; another server would refuse it too.
      if (err instanceof ServerError && err.wireCode === 'WRONGPASS') throw err;
      // A refused certificate meets AUTH when a password is set.
      const refusal = certificateRefusalIn(err);
      if (refusal !== null) this.certificateProblem(connection.address, refusal);
      this.lastConnectError = refusal ?? err;
      return null;
    } finally {
      this.closing.signal.removeEventListener('abort', giveUp);
    }
    if (this.closed) {
      connection.destroy();
      throw clientClosed();
    }
    this.connection = connection;
    this.live.add(connection);
    void connection.closed.then(() => this.live.delete(connection));
    this.lastConnectError = null;
    this.certificateProblems.delete(connection.address);
    const index = this.indexOf(connection.address);
    if (index !== -1) this.preferred = index;
    return connection;
  }

  private async authenticate(connection: Connection, deadline: number): Promise<void> {
    const reply = await connection.send(['AUTH', this.password!], Math.max(1, deadline - performance.now()));
    // Only a refusal is fatal. Other errors (a server without a password may
    // answer AUTH with -ERR) are left for the real commands to report. (A server's
    // unasked refusal never gets here: the connection takes it, see onReply.)
    if (reply.type === 'error' && reply.code === 'WRONGPASS') throw fromWire(reply.code, reply.message);
  }

  /**
   * After a connection failed a request (timeout, drop), the next connection
   * tries the following server first: a paused server still completes TCP
   * handshakes in its kernel, and would otherwise be picked again and again.
   */
  private avoid(connection: Connection): void {
    const index = this.indexOf(connection.address);
    if (index !== -1 && this.preferred === index) this.preferred = (index + 1) % this.servers.length;
  }

  /**
   * One round's addresses: the redirect target, then the servers from the
   * preferred one on, each once. A leader that just timed out goes last: the
   * members listed beside it may name its successor.
   */
  private candidates(): Address[] {
    const ordered = [...this.servers.slice(this.preferred), ...this.servers.slice(0, this.preferred)];
    const target = this.redirectTarget;
    this.redirectTarget = null;
    const round = target === null ? ordered : [target, ...ordered.filter((a) => formatAddress(a) !== formatAddress(target))];
    // One look per address: two looks on a moving clock could list it twice, or not at all.
    const early: Address[] = [];
    const late: Address[] = [];
    for (const a of round) (this.recentlyUnreachable(a) ? late : early).push(a);
    return late.length === 0 ? round : [...early, ...late];
  }

  /**
   * Stops using a connection for new calls; replies still due on it (other calls'
   * NOTLEADERs, say) are let in before it closes. False if it was no longer the current one.
   */
  private leave(connection: Connection): boolean {
    if (this.connection !== connection) return false;
    this.connection = null;
    connection.retire();
    return true;
  }

  private recentlyUnreachable(address: Address): boolean {
    const u = this.unreachable;
    return u !== null && u.address === formatAddress(address) && performance.now() < u.until;
  }

  private indexOf(address: string): number {
    return this.servers.findIndex((s) => formatAddress(s) === address);
  }

  /** Notes that `address` rejected or refused a certificate (see certificateProblems). */
  private certificateProblem(address: string, error: Error): void {
    this.certificateProblems.set(address, { at: performance.now(), error });
    this.lastConnectError = error;
  }

  /** Whether every listed server's certificate problem is from `since` on: more tries cannot help. */
  private everyServerHasCertificateProblem(since: number): boolean {
    return this.servers.every((s) => this.certificateProblemSince(formatAddress(s), since) !== undefined);
  }

  /**
   * `since`: when the call (or round) that gives up began. If every listed server
   * refused this client's certificate from then on, the error says so; otherwise it
   * says none could be reached, with the last failure as the cause.
   */
  private noServerError(since?: number): NoServerAvailableError {
    const cause = this.lastConnectError;
    if (since !== undefined && this.everyServerHasCertificateProblem(since)) {
      const problems = this.servers.map((s) => this.certificateProblems.get(formatAddress(s))!.error);
      const listed = this.servers.map(formatAddress).join(', ');
      const rejected = problems.filter((e) => e instanceof ServerCertificateRejectedError).length;
      if (rejected === 0) {
        const last = problems.find((e) => e === cause) ?? problems[0]!;
        return new NoServerAvailableError(`every server refused this client's TLS certificate (tried ${listed}): ${clause(last)}.`, {
          cause: last,
        });
      }
      // Both ways at once: each server's own problem, since each needs its own remedy.
      if (rejected < problems.length) {
        const each = problems.map(clause).join('; ');
        return new NoServerAvailableError(
          `every server refused this client's TLS certificate or presented one this client does not accept (tried ${listed}): ${each}.`,
          { cause: cause ?? problems[0] },
        );
      }
    }
    const tried = this.tried.size === 0 ? 'none tried yet' : `tried ${[...this.tried].join(', ')}`;
    const why = cause instanceof Error ? `: ${clause(cause)}` : '';
    // More time helps only where time ran out, not against a refusal or a bad certificate.
    const advice = cause === null || cause instanceof TimeoutError ? ', or allow more time (requestTimeoutMs)' : '';
    return new NoServerAvailableError(
      `no server could be reached in time (${tried})${why}. Check that a server runs at one of these addresses${advice}.`,
      { cause },
    );
  }
}

/** A server's certificate problem, after its name: "refused this client's ..." or "presented ...". */
function certificateTrouble(err: Error): string {
  if (err instanceof ServerCertificateRejectedError) return `presented a TLS certificate this client does not accept: ${clause(err)}`;
  return `refused this client's TLS certificate: ${clause(err)}`;
}

/** An error's message to quote inside a sentence of ours: without its closing period. */
function clause(err: Error): string {
  return err.message.replace(/\.$/, '');
}

/** Refused here, not by the server: a name over its word limit would cost the connection and every call on it. */
function withName(words: string[], name: string | undefined): string[] {
  if (name !== undefined) {
    checkName(name);
    words.push(name);
  }
  return words;
}

/** A number a server can hand out: anything else is not an answer to GETSEQ, CURRENT or GETSEQ_BATCH. */
function integerOf(reply: Reply): bigint | undefined {
  return reply.type === 'integer' && reply.value >= 0n && reply.value <= MAX_VALUE ? reply.value : undefined;
}

function positive(option: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0 && value <= MAX_TIMER_MS)) {
    throw new ConfigError(option, `must be a positive number of milliseconds up to ${MAX_TIMER_MS} (about 24.8 days), got ${value}`);
  }
  return value;
}

/** A zero delay would retry a dead server in a tight loop; a maximum below the minimum is a typo. */
function reconnectOption(backoff: BackoffOptions): BackoffOptions {
  const { minDelayMs, maxDelayMs } = backoff;
  if (!(Number.isFinite(minDelayMs) && minDelayMs >= 1 && Number.isFinite(maxDelayMs) && maxDelayMs >= minDelayMs && maxDelayMs <= MAX_TIMER_MS)) {
    throw new ConfigError(
      'reconnect',
      `needs 1 <= minDelayMs <= maxDelayMs <= ${MAX_TIMER_MS} milliseconds, got minDelayMs ${minDelayMs}, maxDelayMs ${maxDelayMs}`,
    );
  }
  return backoff;
}

function clientClosed(): ConnectionClosedError {
  return new ConnectionClosedError('the client was closed; create a new SequencerClient to make more calls', {
    requestSent: false,
  });
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal }).catch(() => {});
}
