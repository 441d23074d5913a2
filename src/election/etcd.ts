/**
 * Leader election for group mode, on an etcd lease.
 *
 * The leader holds `<prefix>leader`, created only when absent and bound to the
 * leader's lease; the value names the node and its advertised address. The
 * key's create revision identifies the term: every store write compares on it,
 * so a deposed leader's writes fail however late they arrive.
 *
 * Serving follows the lease as this process can prove it, never etcd's word
 * after the fact. etcd renews a lease no earlier than it receives the
 * keepalive, and otherwise only ever lengthens leases (a new etcd leader
 * restarts every TTL; expiry is checked only every 500 ms), so a lease renewed by a keepalive
 * *sent* at `sentAt` lives in etcd until at least `sentAt + TTL`. The leader
 * serves until that moment minus a margin (for clock-rate differences between
 * the machines and late timers), measured on the monotonic clock. If no
 * keepalive succeeds by then, it stops by itself and steps down: a paused or
 * cut-off leader has stopped handing out numbers before its key can expire,
 * and so before anyone else can be elected. The same deadline is also kept on
 * the wall clock: Linux's monotonic clock stands still while the machine is
 * suspended, while etcd's keeps running, and the kernel sets the wall clock
 * forward on resume (docs/cluster.md says which VM pauses this does not
 * cover). Either clock past its deadline stops
 * serving, so a wall clock set back only leaves the monotonic one in charge,
 * and one set forward pauses serving until the next keepalive proves the lease
 * again. (Older etcd releases can revoke a
 * lease early after their own leader stalls, etcd-io/etcd#15247; the leader
 * also watches its key and steps down as soon as it disappears.)
 */
import { EventEmitter } from 'node:events';
import { BrokenCircuitError } from 'cockatiel';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCCancelledError,
  isRecoverableError,
  type IKeyValue,
  type IOptions,
  type Watcher,
} from 'etcd3';
import type { Leadership } from '../core/ports.js';
import type { Logger } from '../log.js';
import { leaseOfWinner, winnerKey, winnersPrefix, winnerValue } from './winners.js';

/** The kinds of etcd call whose failures are reported (see etcdFailed). */
const READING = 'reading the leader key';
const CAMPAIGNING = 'campaigning for leadership';
const RENEWING = 'renewing the lease';
type EtcdCall = typeof READING | typeof CAMPAIGNING | typeof RENEWING;

/** One gRPC attempt; etcd3 retries on another member after it. */
const ATTEMPT_MS = 1000;
/** The most any one etcd operation may take, retries included. */
export const ETCD_CALL_TIMEOUT_MS = 2000;
const MARGIN_MIN_MS = 500;
const MARGIN_FRACTION = 0.25;

export interface EtcdConnection {
  readonly endpoints: readonly string[];
  readonly username: string | null;
  readonly password: string | null;
}

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type HostPolicy = ReturnType<NonNullable<FaultHandling['host']>>;

/** How long a member that failed a call is first passed over, while another answers; doubled up to SKIP_MAX_MS while it keeps failing. */
export const SKIP_MIN_MS = 5_000;
export const SKIP_MAX_MS = 60_000;

/** The members of one client whose last call was answered. */
export type Answering = Set<object>;

/**
 * With several endpoints, a member whose call failed (a deadline passed, the
 * connection broke) is passed over for a while, as long as another member's
 * last call was answered: a member that hangs, or whose host drops packets,
 * then costs one call's deadline now and then rather than every call sent its
 * way. The while doubles each time a call begun after its last failure fails
 * too, while others answer. When no member's last call was answered (etcd
 * restarting, a partition), every member is tried again at once, so a node sees
 * etcd as soon as one is back. etcd3 calls nothing on a host policy but execute().
 *
 * Neither counts: a call we cancelled (a watch that is restarted), and opening a
 * stream (a watch, renewals), which returns before the member has said anything;
 * a stream that fails later is reported as a failed call.
 */
export function skipWhileOthersAnswer(answering: Answering, now: () => number = () => performance.now()): HostPolicy {
  const self = {};
  let failedAt = -Infinity;
  let skipMs = SKIP_MIN_MS;
  return {
    execute: async <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> => {
      const startedAt = now();
      if (answering.size > 0 && startedAt < failedAt + skipMs) throw new BrokenCircuitError();
      try {
        const result = await fn({ signal: new AbortController().signal });
        if (!isStream(result)) {
          failedAt = -Infinity;
          skipMs = SKIP_MIN_MS;
          answering.add(self);
        }
        return result;
      } catch (err) {
        if (err instanceof Error && isRecoverableError(err) && !(err instanceof GRPCCancelledError)) {
          answering.delete(self);
          // Only a call sent after the last failure says more, and only while others answer:
          // calls failing together, or all of etcd down, are one failure.
          if (failedAt !== -Infinity && startedAt > failedAt && answering.size > 0) skipMs = Math.min(skipMs * 2, SKIP_MAX_MS);
          failedAt = Math.max(failedAt, now());
        }
        throw err;
      }
    },
  } as unknown as HostPolicy;
}

/** A gRPC stream (it can be cancelled and emits events), as etcd3 opens for watches and renewals. */
function isStream(value: unknown): boolean {
  return typeof value === 'object' && value !== null && typeof (value as { on?: unknown }).on === 'function' && typeof (value as { cancel?: unknown }).cancel === 'function';
}

/** Reconnects a broken watch stream after a quarter second, not etcd3's default of up to 30 s. */
const watchBackoff: NonNullable<FaultHandling['watchBackoff']> = {
  duration: 250,
  next() {
    return this;
  },
};

/** An etcd client whose every unary call gives up after ATTEMPT_MS per member tried. */
export function createEtcdClient(conn: EtcdConnection, endpoints: readonly string[] = conn.endpoints): Etcd3 {
  const answering: Answering = new Set();
  const options: IOptions = {
    hosts: [...endpoints],
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + ATTEMPT_MS }),
    // etcd3's default policy stops calling a member for 5 s after three failures, even when it is
    // the only one: with one endpoint, ours never skips it (no other member answers).
    faultHandling: { host: () => skipWhileOthersAnswer(answering), watchBackoff },
  };
  if (conn.username !== null) options.auth = { username: conn.username, password: conn.password ?? '' };
  return new Etcd3(options);
}

export class EtcdTimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`etcd did not answer ${what} within ${ms} ms`);
    this.name = 'EtcdTimeoutError';
  }
}

/**
 * Calls about leases of the record of winners a campaign has in flight at once (see
 * fenceOut): thousands at once time out in the client and would fail every campaign.
 */
const LEASE_CALLS_IN_FLIGHT = 32;
/** A record of winners this long is worth a warning: every campaign checks each entry. */
const LARGE_RECORD = 100;
/** Deletes per transaction: etcd takes at most 128 operations in one (--max-txn-ops). */
const DELETES_PER_TXN = 100;

/** Settles `fn` for every item, with at most `limit` calls in flight, in the items' order. */
async function settleLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<Array<PromiseSettledResult<R>>> {
  const out = new Array<PromiseSettledResult<R>>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i]!) };
      } catch (reason) {
        out[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * Settles with `p`, or rejects with EtcdTimeoutError after `ms` on the
 * monotonic clock; gRPC deadlines follow the wall clock, which may jump.
 */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new EtcdTimeoutError(what, ms)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** What went wrong talking to etcd, in words that say what to check. */
export function etcdErrorReason(err: unknown): string {
  if (err instanceof EtcdAuthenticationFailedError) {
    return 'etcd rejected the user name or password; check --etcd-username and --etcd-password';
  }
  if (err instanceof EtcdPermissionDeniedError) {
    return 'etcd denied access; grant this etcd user read and write on the --etcd-prefix keys';
  }
  if (needsUser(err)) return 'etcd requires a user; pass --etcd-username and --etcd-password';
  if (err instanceof EtcdTimeoutError) return `${err.message}; check that a majority of etcd members is reachable`;
  const message = err instanceof Error ? err.message : String(err);
  return `etcd request failed (${message}); check that a majority of etcd members is reachable`;
}

const needsUser = (err: unknown): boolean => err instanceof Error && err.message.includes('etcdserver: user name is empty');

const isCredentialError = (err: unknown): boolean =>
  err instanceof EtcdAuthenticationFailedError || err instanceof EtcdPermissionDeniedError || needsUser(err);

/** One leadership term: what the store fences its writes on. */
export interface LeadershipTerm {
  /** The election key, `<prefix>leader`. */
  readonly key: string;
  /** The key's create revision (decimal): unique to this term. */
  readonly revision: string;
  readonly leaseId: string;
}

export interface LeadershipEvents {
  /** This node now leads; serve through a store fenced on `term`. */
  elected: [term: LeadershipTerm];
  /** This node no longer leads (it stopped serving before this fires). */
  lost: [reason: string];
  /**
   * The addresses clients should be sent to changed, the plain one or the TLS
   * one (null: no leader known, or for TLS, none published).
   */
  leaderChanged: [address: string | null, tlsAddress: string | null];
}

export interface EtcdLeadershipOptions {
  /** Shared client for reads, writes and the watch. */
  readonly client: Etcd3;
  /** Lease keepalives go to every endpoint at once, on clients of their own. */
  readonly connection: EtcdConnection;
  /** Ends with '/'. */
  readonly prefix: string;
  readonly nodeId: string;
  /** host:port clients are sent to while this node leads. */
  readonly advertise: string | null;
  /** host:port clients of the TLS port are sent to while this node leads (null: it has none). */
  readonly advertiseTls?: string | null;
  /** Lease TTL in seconds. */
  readonly leaseTtl: number;
  readonly log: Logger;
  /** Wall-clock milliseconds; Date.now unless a test moves it alone. */
  readonly wallClock?: () => number;
  /** Makes the keepalive client of one endpoint; a test can wrap it to fake what a member answers. */
  readonly keepaliveClient?: (connection: EtcdConnection, endpoint: string) => Etcd3;
}

/** One moment on both clocks the serving deadline is kept on. */
interface Instant {
  readonly mono: number;
  readonly wall: number;
}

const NEVER: Instant = { mono: 0, wall: 0 };

interface KnownLeader {
  readonly nodeId: string | null;
  readonly advertise: string | null;
  /** Absent from the key of a leader without a TLS port (or of a build before it was written). */
  readonly advertiseTls: string | null;
}

function parseLeader(kv: IKeyValue): KnownLeader {
  try {
    const v = JSON.parse(kv.value.toString('utf8')) as { nodeId?: unknown; advertise?: unknown; advertiseTls?: unknown };
    return {
      nodeId: typeof v.nodeId === 'string' ? v.nodeId : null,
      advertise: typeof v.advertise === 'string' ? v.advertise : null,
      advertiseTls: typeof v.advertiseTls === 'string' ? v.advertiseTls : null,
    };
  } catch {
    // Written by something else: a leader exists, but we cannot send clients to it.
    return { nodeId: null, advertise: null, advertiseTls: null };
  }
}

export class EtcdLeadership extends EventEmitter<LeadershipEvents> implements Leadership {
  /** The election key. */
  readonly key: string;
  private readonly prefix: string;
  readonly nodeId: string;
  private readonly client: Etcd3;
  private readonly keepaliveClients: Etcd3[];
  private readonly advertise: string | null;
  private readonly advertiseTls: string | null;
  private readonly requestedTtlMs: number;
  private readonly log: Logger;

  private state: 'follower' | 'candidate' | 'leader' = 'follower';
  private current: LeadershipTerm | null = null;
  /** The TTL etcd honours for the current lease: the smaller of asked and granted. */
  private ttlMs: number;
  /** Until when the lease is surely alive in etcd, on both clocks (see the file's comment). */
  private serveUntil: Instant = NEVER;
  /** A new leader serves from here on (monotonic ms): see fenceOut. */
  private serveFrom = 0;
  private fenceTimer: NodeJS.Timeout | null = null;
  /** The lease of the last leader key seen that was another member's (see fenceOut). */
  private predecessorLease: string | null = null;
  private readonly wallClock: () => number;
  private known: KnownLeader | null = null;
  /** The leader key (by create revision) last reported as another member's with our node id. */
  private duplicateSeen: string | null = null;
  /** etcd revision of the newest leader-key state applied; older news is ignored. */
  private seenRevision = 0n;
  /** The newest etcd raft term seen in an answer that proves something (see behindRaftTerm). */
  private raftTerm = 0n;
  private announced: string | null = null;
  private announcedTls: string | null = null;
  private campaigning: Promise<void> | null = null;
  private polling = false;
  private holdOffUntil = 0;
  private started = false;
  private closed = false;
  /** The latest failure of each kind of call that is failing now, the newest last. */
  private readonly etcdTrouble = new Map<EtcdCall, string>();
  private watcher: Watcher | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private deadlineTimer: NodeJS.Timeout | null = null;
  /** The clock's verdict for the synchronous stretch now running; null once it ends (see canServe). */
  private verdict: boolean | null = null;
  private readonly forgetVerdict = (): void => {
    this.verdict = null;
  };

  constructor(opts: EtcdLeadershipOptions) {
    super();
    this.client = opts.client;
    const keepaliveClient = opts.keepaliveClient ?? ((c: EtcdConnection, e: string) => createEtcdClient(c, [e]));
    this.keepaliveClients = opts.connection.endpoints.map((e) => keepaliveClient(opts.connection, e));
    this.key = `${opts.prefix}leader`;
    this.prefix = opts.prefix;
    this.nodeId = opts.nodeId;
    this.advertise = opts.advertise;
    this.advertiseTls = opts.advertiseTls ?? null;
    this.requestedTtlMs = opts.leaseTtl * 1000;
    this.ttlMs = this.requestedTtlMs;
    this.log = opts.log;
    this.wallClock = opts.wallClock ?? Date.now;
  }

  get role(): 'leader' | 'follower' | 'candidate' {
    return this.state;
  }

  /** The term this node leads in, or null. */
  get term(): LeadershipTerm | null {
    return this.current;
  }

  /**
   * Whether numbers may be handed out now. The clock is read once per synchronous
   * stretch of work (in the server: one chunk of requests from one socket, answered
   * by one write at its end) rather than once per request, where it cost more than
   * everything else a request does. That is as safe: every request in the stretch
   * was sent before this read, so nothing a successor hands out after the deadline
   * can precede it in real time. The next stretch (the next chunk, timer or I/O
   * callback) reads the clock again.
   */
  canServe(): boolean {
    if (this.state !== 'leader') return false;
    if (this.verdict === null) {
      const mono = performance.now();
      this.verdict = mono >= this.serveFrom && mono < this.serveUntil.mono && this.wallClock() < this.serveUntil.wall;
      queueMicrotask(this.forgetVerdict);
    }
    return this.verdict;
  }

  leaderAddress(): string | null {
    // A leader past its serving deadline does not know who leads next: naming
    // itself would send clients round in a loop.
    if (this.state === 'leader') return this.canServe() ? this.advertise : null;
    return this.known?.advertise ?? null;
  }

  /** The leader's address for clients of the TLS port, as leaderAddress; null also when it has no TLS port. */
  leaderTlsAddress(): string | null {
    if (this.state === 'leader') return this.canServe() ? this.advertiseTls : null;
    return this.known?.advertiseTls ?? null;
  }

  /** The leader's node id, when known. */
  leaderNodeId(): string | null {
    if (this.state === 'leader') return this.nodeId;
    return this.known?.nodeId ?? null;
  }

  /** How long a new leader still waits for its predecessor's lease to run out before serving (see fenceOut). */
  fenceRemainingMs(): number {
    if (this.state !== 'leader') return 0;
    return Math.max(0, Math.ceil(this.serveFrom - performance.now()));
  }

  /** How long this node may still serve without another keepalive (0 unless leading). */
  leaseRemainingMs(): number {
    if (this.state !== 'leader') return 0;
    const left = Math.min(this.serveUntil.mono - performance.now(), this.serveUntil.wall - this.wallClock());
    return Math.max(0, Math.floor(left));
  }

  /** The latest etcd failure, while etcd keeps failing; null when etcd answers. */
  get etcdProblem(): string | null {
    let latest: string | null = null;
    for (const reason of this.etcdTrouble.values()) latest = reason;
    return latest;
  }

  /**
   * Starts watching the leader key and campaigns if nobody leads. Rejects only
   * when etcd refuses our credentials; an unreachable etcd is retried in the
   * background (the node serves nothing meanwhile).
   */
  async start(): Promise<void> {
    if (this.started) throw new Error('EtcdLeadership.start called twice');
    this.started = true;
    this.watch();
    try {
      await this.poll();
      if (this.campaigning) await this.campaigning;
    } catch (err) {
      if (isCredentialError(err)) throw new Error(etcdErrorReason(err), { cause: err });
      this.etcdFailed(READING, err);
    }
    const every = Math.min(5000, Math.max(250, this.requestedTtlMs / 2));
    this.pollTimer = setInterval(() => void this.refresh(), every);
    this.pollTimer.unref();
  }

  /**
   * Gives up leadership at once: stops serving and revokes the lease, which
   * deletes the key with it, so a follower can take over within moments.
   * This node does not campaign again for one TTL, to let another node win.
   */
  resign(): Promise<void> {
    return this.stepDown('resigned', { holdOffMs: this.ttlMs });
  }

  /**
   * Stops leading (no-op unless leading, or when `term` is given and is no
   * longer current). `holdOffMs` keeps this node from campaigning for that long.
   */
  async stepDown(reason: string, opts: { term?: LeadershipTerm; holdOffMs?: number } = {}): Promise<void> {
    const term = this.current;
    if (this.state !== 'leader' || term === null) return;
    if (opts.term !== undefined && opts.term !== term) return;
    this.state = 'follower';
    this.current = null;
    this.serveUntil = NEVER;
    this.known = null;
    this.clearLeaderTimers();
    if (opts.holdOffMs !== undefined) this.holdOffUntil = performance.now() + opts.holdOffMs;
    this.emit('lost', reason);
    this.announce();
    // Still waiting out a predecessor: our lease must outlive it (see fenceOut).
    await this.release(term, { revoke: performance.now() >= this.serveFrom });
    if (!this.closed) void this.refresh();
  }

  /** Resigns if leading, stops watching and closes the keepalive clients. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
    if (this.campaigning) await this.campaigning;
    await this.stepDown('shutting down');
    const watcher = this.watcher;
    this.watcher = null;
    if (watcher) await withTimeout(watcher.cancel(), ETCD_CALL_TIMEOUT_MS, 'cancelling the watch').catch(() => {});
    for (const c of this.keepaliveClients) c.close();
  }

  private watch(): void {
    const w = this.client.watch().key(this.key).watcher();
    this.watcher = w;
    w.on('put', (kv) => this.apply(kv, BigInt(kv.mod_revision)));
    w.on('delete', (kv) => this.apply(null, BigInt(kv.mod_revision)));
    // Changes may have been missed while the stream was down.
    w.on('connected', () => void this.refresh());
    w.on('error', (err) => {
      // etcd cancelled the watch (e.g. its revision was compacted): the poll covers the gap; watch anew.
      this.log.debug({ err: err.message }, 'etcd watch cancelled; watching again');
      if (this.watcher === w) this.rewatch(250);
    });
  }

  /** Drops the current watch and starts a new one from the latest revision, after `delayMs`. */
  private rewatch(delayMs: number): void {
    if (this.closed) return;
    this.watcher?.cancel().catch(() => {});
    this.watcher = null;
    setTimeout(() => {
      if (!this.closed && this.watcher === null) this.watch();
    }, delayMs).unref();
  }

  private async refresh(): Promise<void> {
    if (this.closed || this.polling) return;
    this.polling = true;
    try {
      await this.poll();
    } catch (err) {
      this.etcdFailed(READING, err);
    } finally {
      this.polling = false;
    }
  }

  private async poll(): Promise<void> {
    const before = this.seenRevision;
    const res = await withTimeout(this.client.get(this.key).exec(), ETCD_CALL_TIMEOUT_MS, READING);
    // A follower renews nothing: the failed renewals of a term it lost are over once etcd answers.
    if (this.state === 'leader') this.etcdAnswered(READING);
    else this.etcdAnswered(READING, RENEWING);
    const revision = BigInt(res.header.revision);
    if (revision < before) {
      // A read sent after we had seen `before` cannot come from earlier in the same
      // history: etcd was restored from a snapshot or replaced. Without starting the
      // count over, every answer from then on would be ignored as stale, and nobody
      // would campaign again. The watch waits for revisions past the old ones: watch anew.
      // Its raft terms start over too: renewals from it must not be refused as behind
      // the old cluster's term (a follower resets it anyway when it campaigns).
      this.log.warn({ revision: String(revision), seen: String(before) }, "etcd's revision went backwards (a restored or new cluster); following it");
      this.seenRevision = revision;
      this.raftTerm = 0n;
      this.rewatch(0);
    }
    this.apply(res.kvs[0] ?? null, revision);
  }

  /** Takes in the leader key as etcd had it at `revision` (null: absent). */
  private apply(kv: IKeyValue | null, revision: bigint): void {
    if (this.closed || revision < this.seenRevision) return;
    this.seenRevision = revision;
    if (this.state === 'leader') {
      const term = this.current!;
      // News from before our key was created says nothing about our term.
      if (revision < BigInt(term.revision)) return;
      if (kv === null) void this.stepDown('the leader key was deleted in etcd', { term });
      else if (kv.create_revision !== term.revision) void this.stepDown('another node holds the leader key', { term });
      return;
    }
    const leader = kv === null ? null : parseLeader(kv);
    // A key naming this node and its address while it does not lead is left from an
    // earlier term of ours (it expires with its lease); sending clients here would
    // only loop them. The same id with another address is another member.
    const sameId = kv !== null && leader?.nodeId === this.nodeId;
    const ours = sameId && leader!.advertise === this.advertise;
    if (sameId && !ours && kv.create_revision !== this.duplicateSeen) {
      this.duplicateSeen = kv.create_revision;
      this.log.error(
        { nodeId: this.nodeId, leader: leader!.advertise },
        'another member uses this node id and leads: give each member its own --node-id',
      );
    }
    // A key that carries this node's own TLS address (ours from before a restart with
    // another --advertise, say) must not be named: TLS clients would come straight back.
    const selfTls = leader !== null && this.advertiseTls !== null && leader.advertiseTls === this.advertiseTls;
    this.known = ours ? null : selfTls ? { ...leader, advertiseTls: null } : leader;
    if (kv !== null && !ours && kv.lease !== '0') this.predecessorLease = kv.lease;
    this.announce();
    if (kv === null) void this.campaign();
    // Someone leads: campaigning is over, and so is whatever failed it.
    else this.etcdAnswered(CAMPAIGNING);
  }

  private campaign(): void {
    if (this.closed || this.state === 'leader' || this.campaigning !== null) return;
    if (performance.now() < this.holdOffUntil) return;
    this.campaigning = this.runCampaign().finally(() => {
      this.campaigning = null;
    });
  }

  private async runCampaign(): Promise<void> {
    this.state = 'candidate';
    // Raft terms compare only within one etcd cluster; a restored cluster starts over.
    this.raftTerm = 0n;
    let unusedLease: string | null = null;
    /** Whether our campaign won, and so wrote our lease into the record of winners. */
    let recorded = false;
    try {
      const sentAt = this.now();
      const grant = await withTimeout(
        this.client.leaseClient.leaseGrant({ TTL: this.requestedTtlMs / 1000, ID: 0 }),
        ETCD_CALL_TIMEOUT_MS,
        'granting a lease',
      );
      unusedLease = grant.ID;
      const grantedMs = Number(grant.TTL) * 1000;
      if (grantedMs > this.requestedTtlMs) {
        this.log.warn(
          { requestedTtlMs: this.requestedTtlMs, grantedTtlMs: grantedMs },
          'etcd granted a longer lease than --lease-ttl (its minimum follows its election timeout); a crashed leader is replaced only after the longer TTL',
        );
      }
      this.ttlMs = Math.min(this.requestedTtlMs, grantedMs);
      const value = JSON.stringify({ nodeId: this.nodeId, advertise: this.advertise, ...(this.advertiseTls === null ? {} : { advertiseTls: this.advertiseTls }) });
      const res = await withTimeout(
        this.client
          .if(this.key, 'Create', '==', 0)
          .then(
            this.client.put(this.key).value(value).lease(grant.ID),
            this.client.put(winnerKey(this.prefix, grant.ID)).value(winnerValue(this.nodeId, grant.ID)),
            this.client.get(this.key),
            this.client.getAll().prefix(winnersPrefix(this.prefix)),
          )
          .else(this.client.get(this.key), this.client.getAll().prefix(winnersPrefix(this.prefix)))
          .commit(),
        ETCD_CALL_TIMEOUT_MS,
        'creating the leader key',
      );
      this.etcdAnswered(CAMPAIGNING);
      const [keyAt, winnersAt] = res.succeeded ? [2, 3] : [0, 1];
      const kv = res.responses[keyAt]?.response_range?.kvs[0] ?? null;
      // Every earlier winner not yet known to be gone: whom to fence out besides the last key seen.
      const earlier = (res.responses[winnersAt]?.response_range?.kvs ?? []).map((w) => leaseOfWinner(this.prefix, w.key));
      // The key may carry our lease although the txn "failed": a retried attempt found what the first one created.
      if (kv !== null && kv.lease === grant.ID) {
        recorded = true;
        const term: LeadershipTerm = { key: this.key, revision: kv.create_revision, leaseId: grant.ID };
        let provenAt = sentAt;
        const prove = async (): Promise<void> => {
          provenAt = this.now();
          if ((await this.renew(grant.ID)) <= 0) throw new Error('the new lease expired during the campaign');
        };
        // Committed by the current etcd leader (and the term was reset above, so this only raises
        // it): answers about leases from a term before it prove nothing.
        this.behindRaftTerm(res.header);
        const fenceMs = await this.fenceOut(grant.ID, [this.predecessorLease, ...earlier], {
          keepKey: () => (unusedLease = null),
          provenFor: () => performance.now() - provenAt.mono,
          prove,
        });
        // A slow campaign would start the term with its lease nearly spent: prove it afresh first.
        // Should that fail, a lease that revoked nobody (not kept) is revoked with its key: left to
        // expire, our unrenewed key would keep every member from campaigning for a TTL.
        if (!this.closed && performance.now() - provenAt.mono > this.keepaliveInterval()) await prove();
        unusedLease = null;
        if (this.closed) {
          await this.release(term, { revoke: fenceMs === 0 });
          return;
        }
        this.becomeLeader(term, provenAt, fenceMs);
        return;
      }
      this.state = 'follower';
      this.apply(kv, BigInt(res.header.revision));
    } catch (err) {
      this.state = 'follower';
      this.etcdFailed(CAMPAIGNING, err instanceof AggregateError ? err.errors[0] : err);
    } finally {
      // Nobody was revoked on the strength of this lease (keepKey): its record can go with it.
      if (unusedLease !== null) {
        const lease = unusedLease;
        const forget = recorded;
        void this.revoke(lease).then(async (revoked) => {
          if (revoked && forget) await this.forgetWinners([lease]);
        });
      }
    }
  }

  /**
   * Makes sure the leader before us has stopped serving. Its key is gone, but its
   * lease need not be: an operator may have deleted the key by hand while that
   * leader's renewals still get through and its watch lags, and it would serve
   * on beside us until it noticed. Then its lease is revoked, which its next
   * renewal reports and which stops it, and we wait one full TTL of that lease
   * before serving: any deadline it proved came from a renewal sent before the
   * revoke, so it has run out by then. Returns that wait in ms; 0 when the lease
   * has expired or was revoked, as after a crash or a clean stop.
   *
   * Which leases: that of the last leader key we saw, and those of every earlier
   * winner still on record (winners.ts), read in the campaign's own
   * transaction. The record covers a member that never saw the deleted key (it
   * started after the deletion, or its watch and polls missed it). The leases
   * found gone, and those revoked here, leave the record afterwards.
   *
   * Once the revoke may have gone out, nobody must find the old lease gone and
   * serve at once, whatever happens to us: so our own key must outlive the old
   * leader's deadline. Our lease is proven within half the margin before the
   * revoke (a lease outlives its last renewal by the TTL, the old leader's deadline
   * its last renewal by the TTL minus the margin), and from then until we serve it
   * is never revoked, only left to expire (see `keepKey` and release). A member
   * that finds our key deleted meanwhile finds our lease alive, and waits in turn;
   * one that finds it expired comes after the old leader's deadline.
   */
  private async fenceOut(
    ourLease: string,
    candidates: ReadonlyArray<string | null>,
    ours: { keepKey: () => void; provenFor: () => number; prove: () => Promise<void> },
  ): Promise<number> {
    const previous = [...new Set(candidates)].filter((l): l is string => l !== null && l !== ourLease && l !== '0');
    if (previous.length > LARGE_RECORD) {
      this.log.warn(
        { leases: previous.length },
        'the record of winners in etcd is large (campaigns that won and then failed): each is checked before serving; it shrinks as they are found gone',
      );
    }
    const checks = await settleLimited(previous, LEASE_CALLS_IN_FLIGHT, async (ID) => {
      const res = await withTimeout(this.client.leaseClient.leaseTimeToLive({ ID }), ETCD_CALL_TIMEOUT_MS, "reading the previous leader's lease");
      // A deposed etcd leader's lessor need not know a lease granted since, and would call it gone.
      const behind = this.behindRaftTerm(res.header);
      if (behind !== null) throw behind;
      return res;
    });
    const gone: string[] = [];
    const alive: Array<{ ID: string; grantedMs: number }> = [];
    checks.forEach((c, i) => {
      if (c.status === 'rejected') return;
      // -1: no such lease. 0 is a live lease in its last second (etcd rounds down).
      if (Number(c.value.TTL) < 0) gone.push(previous[i]!);
      else alive.push({ ID: previous[i]!, grantedMs: Number(c.value.grantedTTL) * 1000 });
    });
    // Even when a check failed, so that a large record cannot fail every campaign for good.
    void this.forgetWinners(gone);
    const failed = checks.find((c) => c.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    if (alive.length === 0) return 0;
    ours.keepKey();
    // A proof counts from when it was sent, so a slow answer proves too little: try again a few
    // times. Revoke all the same if etcd stays that slow: unrevoked, a leader whose key was deleted
    // but whose renewals still get through would serve on beside whoever comes after us.
    let proofFailed: unknown = null;
    try {
      for (let tries = 0; tries < 3 && ours.provenFor() > this.margin() / 2; tries++) await ours.prove();
    } catch (err) {
      // No term for us, but the revoke still goes out first, for the same reason.
      proofFailed = err;
    }
    if (proofFailed === null && ours.provenFor() > this.margin() / 2) {
      this.log.warn(
        { provenForMs: Math.round(ours.provenFor()), marginMs: this.margin() },
        "etcd answers lease renewals slowly: revoking the previous leader's lease with our own lease proven less recently than planned",
      );
    }
    const waitMs = Math.max(this.ttlMs, ...alive.map(({ grantedMs }) => grantedMs));
    const revokes = await settleLimited(alive, LEASE_CALLS_IN_FLIGHT, ({ ID }) =>
      withTimeout(this.client.leaseClient.leaseRevoke({ ID }), ETCD_CALL_TIMEOUT_MS, "revoking the previous leader's lease"),
    );
    for (const r of revokes) {
      // Gone already: expired, or revoked by another member, whose wait we cannot see. Wait all the same.
      if (r.status === 'rejected' && !(r.reason instanceof EtcdLeaseInvalidError)) throw r.reason;
    }
    // Gone now; our own lease, kept and on record, stands for them until they have surely stopped.
    void this.forgetWinners(alive.map(({ ID }) => ID));
    if (proofFailed !== null) throw proofFailed;
    this.log.warn(
      { waitMs, leases: alive.map(({ ID }) => ID) },
      "the previous leader's key was gone but its lease alive (deleted by hand, or by a leader that stepped down while etcd could not take its revoke): revoked the lease; serving once it has surely stopped",
    );
    return waitMs;
  }

  private becomeLeader(term: LeadershipTerm, provenAt: Instant, fenceMs: number): void {
    this.state = 'leader';
    this.current = term;
    this.known = { nodeId: this.nodeId, advertise: this.advertise, advertiseTls: this.advertiseTls };
    const created = BigInt(term.revision);
    if (created > this.seenRevision) this.seenRevision = created;
    // A deadline left from an earlier term must not outlast this term's proof.
    this.serveUntil = NEVER;
    // A wait begun in an earlier term of ours still stands: that term may have stepped down before
    // it ended (its key deleted again), and the predecessor it waited out may still be serving.
    // fenceOut finds our earlier lease on record and waits a full TTL anyway; this keeps the wait
    // whatever the record holds (a member of an older version, a record removed by hand).
    this.serveFrom = Math.max(this.serveFrom, performance.now() + fenceMs);
    this.predecessorLease = null;
    const waitMs = this.serveFrom - performance.now();
    if (waitMs > 0) {
      this.fenceTimer = setTimeout(() => {
        this.fenceTimer = null;
        this.verdict = null;
        this.announce();
      }, Math.ceil(waitMs) + 1);
      this.fenceTimer.unref();
    }
    this.extend(term, provenAt);
    this.scheduleKeepalive(term, provenAt.mono + this.keepaliveInterval() - performance.now());
    this.announce();
    this.emit('elected', term);
  }

  private now(): Instant {
    return { mono: performance.now(), wall: this.wallClock() };
  }

  private margin(): number {
    return Math.max(MARGIN_MIN_MS, this.ttlMs * MARGIN_FRACTION);
  }

  /** How long a renewal keeps the leader serving, from when it was sent. */
  private servingWindowMs(): number {
    return this.ttlMs - this.margin();
  }

  /** Three renewals go out in every serving window, so one or two may fail unnoticed. */
  private keepaliveInterval(): number {
    return Math.max(50, this.servingWindowMs() / 3);
  }

  /** A renewal sent at `sentAt` succeeded: the lease lives in etcd until at least sentAt + TTL. */
  private extend(term: LeadershipTerm, sentAt: Instant): void {
    const lives = this.servingWindowMs();
    // An older renewal answering late proves less than the last one did.
    if (sentAt.mono + lives <= this.serveUntil.mono) return;
    this.serveUntil = { mono: sentAt.mono + lives, wall: sentAt.wall + lives };
    this.verdict = null;
    this.armDeadline(term);
  }

  private armDeadline(term: LeadershipTerm): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = setTimeout(() => this.checkDeadline(term), this.serveUntil.mono - performance.now() + 1);
    this.deadlineTimer.unref();
  }

  private checkDeadline(term: LeadershipTerm): void {
    if (this.current !== term) return;
    // Timers count from the event loop's cached clock and may fire a little early.
    if (performance.now() < this.serveUntil.mono) {
      this.armDeadline(term);
      return;
    }
    void this.stepDown(
      // Not how long etcd has failed: a renewal proves the lease from when it was sent, so
      // this says only that none sent in the last serving window was confirmed.
      `the lease was not renewed in time (no renewal sent in the last ${Math.round(this.servingWindowMs())} ms was confirmed by etcd: ` +
        'etcd unreachable or slow, or this process was paused); stopped serving before it could expire in etcd',
      { term },
    );
  }

  private scheduleKeepalive(term: LeadershipTerm, delayMs: number): void {
    this.keepaliveTimer = setTimeout(() => this.keepalive(term), Math.max(0, delayMs));
    this.keepaliveTimer.unref();
  }

  /**
   * Sends one renewal and schedules the next. Renewals do not wait for each
   * other: a slow answer still proves the lease from its own send time, while
   * the next renewal is already on its way.
   */
  private keepalive(term: LeadershipTerm): void {
    if (this.current !== term) return;
    const sentAt = this.now();
    this.renew(term.leaseId).then(
      (ttlSeconds) => {
        if (this.current !== term) return;
        if (ttlSeconds <= 0) {
          void this.stepDown('etcd reports that our lease has expired', { term });
          return;
        }
        this.etcdAnswered(RENEWING);
        this.extend(term, sentAt);
      },
      (err: AggregateError) => {
        if (this.current === term) this.etcdFailed(RENEWING, err.errors[0]);
      },
    );
    this.scheduleKeepalive(term, this.keepaliveInterval());
  }

  /**
   * A deposed etcd leader that has not noticed yet still answers from its own lessor
   * (etcd-io/etcd#15247): it renews leases, and calls gone those granted since. Such
   * answers prove nothing. Returns the error for an answer from a raft term behind the
   * newest one seen; otherwise takes its term as the newest and returns null.
   */
  private behindRaftTerm(header: { raft_term?: string } | undefined): Error | null {
    const raftTerm = BigInt(header?.raft_term ?? '0');
    if (raftTerm < this.raftTerm) return new Error(`an etcd member answered from raft term ${raftTerm}, behind term ${this.raftTerm}`);
    this.raftTerm = raftTerm;
    return null;
  }

  /**
   * Renews through every member at once; resolves with the first TTL reported
   * (0: the lease is gone), so a dead or paused member costs nothing. Rejects
   * with an AggregateError when no member answers in time.
   */
  private renew(leaseId: string): Promise<number> {
    // An answer later than this extends nothing.
    const usefulFor = this.servingWindowMs();
    return Promise.any(this.keepaliveClients.map((c) => this.renewVia(c, leaseId, usefulFor)));
  }

  private renewVia(client: Etcd3, leaseId: string, timeoutMs: number): Promise<number> {
    type Stream = Awaited<ReturnType<Etcd3['leaseClient']['leaseKeepAlive']>>;
    let stream: Stream | null = null;
    let answered = false;
    const attempt = (async () => {
      const s = await client.leaseClient.leaseKeepAlive({ deadline: Date.now() + timeoutMs });
      stream = s;
      return new Promise<number>((resolve, reject) => {
        s.on('data', (res) => {
          answered = true;
          const behind = this.behindRaftTerm(res.header);
          if (behind !== null) reject(behind);
          else resolve(Number(res.TTL));
        });
        s.on('error', reject);
        s.write({ ID: leaseId });
      });
    })();
    return withTimeout(attempt, timeoutMs, 'renewing the lease').finally(() => {
      // Half-closing ends the call cleanly; cancelling would count against the member in etcd3.
      if (answered) stream?.end();
      else stream?.cancel();
    });
  }

  /**
   * Best effort: revoke the lease, which deletes our key with it; failing that
   * (or with `revoke` false), delete the key if it is still ours. Revoking first
   * means a successor never finds our key gone and our lease alive, which would
   * make it wait (fenceOut); that is what it must do when we were still waiting
   * out a predecessor ourselves, so then the lease is left to expire, and stays
   * in the record of winners. A revoked lease leaves the record.
   */
  private async release(term: LeadershipTerm, opts: { revoke: boolean }): Promise<void> {
    if (opts.revoke && (await this.revoke(term.leaseId))) {
      // Not waiting out anyone: nobody needs this lease on record any more.
      await this.forgetWinners([term.leaseId]);
      return;
    }
    try {
      await withTimeout(
        this.client
          .if(this.key, 'Create', '==', term.revision)
          // Revisions start over when etcd is restored from a backup: the lease tells terms apart then too.
          .and(this.key, 'Lease', '==', term.leaseId)
          .then(this.client.delete().key(this.key))
          .commit(),
        ETCD_CALL_TIMEOUT_MS,
        'deleting the leader key',
      );
    } catch (err) {
      this.log.debug({ err: etcdErrorReason(err) }, 'could not delete the leader key; it expires with the lease');
    }
  }

  /**
   * Best effort, never rejects: removes leases from the record of winners (winners.ts).
   * Only for leases that cannot stand for a leader still serving (see there). What
   * stays (etcd unreachable, say) is checked and removed by the next winner.
   */
  private async forgetWinners(leases: readonly string[]): Promise<void> {
    try {
      for (let i = 0; i < leases.length; i += DELETES_PER_TXN) {
        const success = leases
          .slice(i, i + DELETES_PER_TXN)
          .map((lease) => ({ request_delete_range: { key: Buffer.from(winnerKey(this.prefix, lease)) } }));
        await withTimeout(this.client.kv.txn({ compare: [], success, failure: [] }), ETCD_CALL_TIMEOUT_MS, 'removing leases from the record of winners');
      }
    } catch (err) {
      this.log.debug({ err: etcdErrorReason(err) }, 'could not remove leases from the record of winners; the next leader will');
    }
  }

  private async revoke(leaseId: string): Promise<boolean> {
    try {
      await withTimeout(this.client.leaseClient.leaseRevoke({ ID: leaseId }), ETCD_CALL_TIMEOUT_MS, 'revoking a lease');
      return true;
    } catch (err) {
      this.log.debug({ err: etcdErrorReason(err) }, 'could not revoke a lease; it expires by itself');
      return false;
    }
  }

  private clearLeaderTimers(): void {
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    this.keepaliveTimer = null;
    this.fenceTimer = null;
    this.deadlineTimer = null;
  }

  private announce(): void {
    const address = this.leaderAddress();
    const tlsAddress = this.leaderTlsAddress();
    if (address === this.announced && tlsAddress === this.announcedTls) return;
    this.announced = address;
    this.announcedTls = tlsAddress;
    this.emit('leaderChanged', address, tlsAddress);
  }

  /**
   * One warning per outage, not one per retry. Kept per kind of call: when etcd
   * answers reads but refuses writes (its space quota reached, say), a successful
   * read must not end the outage that failing campaigns are still in.
   */
  private etcdFailed(what: EtcdCall, err: unknown): void {
    const reason = `${what}: ${etcdErrorReason(err)}`;
    if (this.etcdTrouble.size === 0) this.log.warn({ err: reason }, 'etcd is failing');
    else this.log.debug({ err: reason }, 'etcd still failing');
    this.etcdTrouble.delete(what);
    this.etcdTrouble.set(what, reason);
  }

  private etcdAnswered(...calls: EtcdCall[]): void {
    let cleared = false;
    for (const what of calls) cleared = this.etcdTrouble.delete(what) || cleared;
    if (cleared && this.etcdTrouble.size === 0) this.log.info('etcd answers again');
  }
}
