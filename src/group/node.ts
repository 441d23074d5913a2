/**
 * A member of a group: elects a leader through etcd and, while this node
 * leads, serves through a Sequencer whose marks live in etcd, fenced on the
 * leadership term. Every election starts a fresh Sequencer that loads the
 * stored marks: state from an earlier term is never trusted, since another
 * leader may have moved the marks since.
 */
import type { EventEmitter } from 'node:events';
import type { Config } from '../config.js';
import type { Leadership, Readiness, Store } from '../core/ports.js';
import {
  notLeader,
  notLeaderAt,
  Sequencer,
  SequenceError,
  SHUTTING_DOWN,
  type Caller,
  type SequenceSnapshot,
  type SequenceSource,
  type SequencerEvents,
} from '../core/sequencer.js';
import {
  createEtcdClient,
  EtcdLeadership,
  type EtcdConnection,
  type LeadershipEvents,
  type LeadershipTerm,
} from '../election/etcd.js';
import { StateCorruptError } from '../errors.js';
import type { Logger } from '../log.js';
import { EtcdStore } from '../store/etcd.js';

export interface GroupHandle extends SequenceSource {
  readonly leadership: Leadership;
  /** For /readyz: ok only while this node leads, has loaded its state and its lease is surely alive. */
  readiness(): Readiness;
  /** Extra INFO lines: role, leader, node_id, etcd endpoints, prefix, term. */
  info(): Array<[string, string]>;
  /** Why etcd writes are failing right now, or null. */
  persistenceFailure(): string | null;
  /** Terms this member has served as leader since it started: elected, and its marks loaded. */
  termsServed(): number;
  /**
   * Clean stop: a leader persists its exact next numbers, then resigns; closes the
   * etcd clients. Resolves false when a leader could not store them. `stored` is
   * called as soon as they are (before the resignation), or at once on a follower.
   */
  close(stored?: () => void): Promise<boolean>;
}

const LOAD_RETRY_MIN_MS = 100;
const LOAD_RETRY_MAX_MS = 2000;

/** What a member needs from its election: EtcdLeadership, or a fake in tests. */
export interface GroupElection extends Leadership, Pick<EventEmitter<LeadershipEvents>, 'on'> {
  readonly term: LeadershipTerm | null;
  /** The latest etcd failure, while etcd keeps failing. */
  readonly etcdProblem: string | null;
  leaderNodeId(): string | null;
  leaseRemainingMs(): number;
  /** How long a new leader still waits out its predecessor's lease before serving. */
  fenceRemainingMs?(): number;
  start(): Promise<void>;
  stepDown(reason: string, opts?: { term?: LeadershipTerm; holdOffMs?: number }): Promise<void>;
  close(): Promise<void>;
}

/** The I/O a member is built from; `etcdParts` in production, fakes in tests. */
export interface GroupParts {
  readonly election: GroupElection;
  /** The store of one term: its writes are fenced on that term. */
  storeFor(term: LeadershipTerm): Store;
  /** Closes what the parts hold open (the etcd client), after the election is closed. */
  close(): void;
}

/** An etcd client, the election on it, and stores fenced on each term. */
export function etcdParts(config: Config, nodeId: string, log: Logger): GroupParts {
  const connection: EtcdConnection = {
    endpoints: config.etcd,
    username: config.etcdUsername,
    password: config.etcdPassword,
  };
  const etcd = createEtcdClient(connection);
  return {
    election: new EtcdLeadership({
      client: etcd,
      connection,
      prefix: config.etcdPrefix,
      nodeId,
      advertise: config.advertise,
      advertiseTls: config.advertiseTls,
      leaseTtl: config.leaseTtl,
      log,
    }),
    storeFor: (term) => new EtcdStore(etcd, config.etcdPrefix, term),
    close: () => etcd.close(),
  };
}

/**
 * `events` observes every term's store writes (metrics); the group logs them
 * itself. `parts` replaces etcd, for tests.
 */
export async function startGroup(
  config: Config,
  log: Logger,
  events: SequencerEvents = {},
  parts?: (nodeId: string, log: Logger) => GroupParts,
): Promise<GroupHandle> {
  const groupLog = log.child({ component: 'group' });
  if (config.advertise === null) throw new Error('startGroup needs config.advertise: the address NOTLEADER names for this member');
  const nodeId = config.nodeId ?? config.advertise;
  const makeParts = parts ?? ((id: string, l: Logger) => etcdParts(config, id, l));
  const node = new GroupNode(config, groupLog, events, nodeId, makeParts(nodeId, groupLog));
  try {
    await node.start();
  } catch (err) {
    await node.close();
    throw err;
  }
  return node;
}

class GroupNode implements GroupHandle {
  readonly leadership: GroupElection;
  private readonly config: Config;
  private readonly log: Logger;
  /** The sequencer of the current term, once its marks are loaded, and its store. */
  private sequencer: Sequencer | null = null;
  private store: Store | null = null;
  /** Why the last load of this term's marks failed (null once loaded, or not leading). */
  private loadError: string | null = null;
  /** Terms whose marks loaded, so that this member served them: what termsServed() reports. */
  private terms = 0;
  private persistFailingSince: number | null = null;
  private closing: Promise<boolean> | null = null;
  /** The lease: how long etcd may keep failing a leader before it lets another node try. */
  private readonly ttlMs: number;

  constructor(
    config: Config,
    log: Logger,
    private readonly observer: SequencerEvents,
    private readonly nodeId: string,
    private readonly parts: GroupParts,
  ) {
    this.config = config;
    this.log = log;
    this.ttlMs = config.leaseTtl * 1000;
    this.leadership = parts.election;
    this.leadership.on('elected', (term) => void this.onElected(term));
    this.leadership.on('lost', (reason) => this.onLost(reason));
    this.leadership.on('leaderChanged', (address, tlsAddress) =>
      this.log.info({ leader: address, leaderTls: tlsAddress, leaderNodeId: this.leadership.leaderNodeId() }, 'group leader changed'),
    );
  }

  async start(): Promise<void> {
    this.log.info(
      { nodeId: this.nodeId, etcd: this.config.etcd, prefix: this.config.etcdPrefix, leaseTtl: this.config.leaseTtl },
      'joining group',
    );
    await this.leadership.start();
  }

  allocate(name: string, count: bigint, caller?: Caller): bigint | SequenceError | Promise<bigint> {
    if (this.closing) return SHUTTING_DOWN;
    return this.sequencer?.allocate(name, count, caller) ?? this.notServing();
  }

  forget(caller: Caller): void {
    this.sequencer?.forget(caller);
  }

  current(name: string, caller?: Caller): bigint | SequenceError | Promise<bigint> {
    if (this.closing) return SHUTTING_DOWN;
    return this.sequencer?.current(name, caller) ?? this.notServing();
  }

  snapshot(): SequenceSnapshot[] {
    return this.sequencer?.snapshot() ?? [];
  }

  persistenceFailure(): string | null {
    return this.sequencer?.persistenceFailure ?? this.loadError;
  }

  termsServed(): number {
    return this.terms;
  }

  readiness(): Readiness {
    if (this.closing) return { ready: false, reason: 'shutting down' };
    const l = this.leadership;
    if (l.role !== 'leader') {
      const leader = l.leaderAddress();
      if (leader !== null) return { ready: false, reason: `follower; the leader is ${leader}` };
      const trouble = l.etcdProblem;
      return { ready: false, reason: trouble ? `no leader known; ${trouble}` : 'no leader elected yet' };
    }
    if (this.sequencer === null) {
      return { ready: false, reason: this.loadError ? `leader, cannot load marks: ${this.loadError}` : 'leader, loading marks from etcd' };
    }
    if ((l.fenceRemainingMs?.() ?? 0) > 0) {
      return { ready: false, reason: "leader, waiting for the previous leader's lease to run out (its key was deleted while it lived)" };
    }
    if (!l.canServe()) return { ready: false, reason: 'leader, but the lease is not confirmed by etcd' };
    // As a single node with failing storage: numbers beyond the mark are refused until etcd takes writes.
    const failing = this.sequencer.persistenceFailure;
    if (failing !== null) return { ready: false, reason: `leader; ${failing}` };
    return { ready: true, reason: 'leader' };
  }

  info(): Array<[string, string]> {
    const l = this.leadership;
    return [
      ['leader', l.leaderAddress() ?? ''],
      ['leader_tls', l.leaderTlsAddress() ?? ''],
      ['leader_node_id', l.leaderNodeId() ?? ''],
      ['node_id', this.nodeId],
      ['etcd_endpoints', this.config.etcd.join(',')],
      ['etcd_prefix', this.config.etcdPrefix],
      ['term', l.term?.revision ?? ''],
      ['lease_ttl_seconds', String(this.config.leaseTtl)],
      ['lease_remaining_ms', String(l.leaseRemainingMs())],
    ];
  }

  close(stored?: () => void): Promise<boolean> {
    this.closing ??= this.shutdown(stored);
    return this.closing;
  }

  private async shutdown(stored?: () => void): Promise<boolean> {
    const seq = this.sequencer;
    let exact = true;
    if (seq !== null) {
      exact = await seq.close();
      if (exact) this.log.info('stored the exact next numbers in etcd');
      else this.log.error('could not store the exact next numbers; the next leader skips the rest of the reserved window');
    }
    if (exact) stored?.();
    await this.leadership.close();
    this.sequencer = null;
    closeQuietly(this.store);
    this.store = null;
    this.parts.close();
    return exact;
  }

  private notServing(): SequenceError {
    if (this.leadership.role === 'leader') {
      if (this.loadError !== null) return new SequenceError('ERR', `persistence unavailable: ${this.loadError}`);
      // Elected but still loading the marks: naming itself would send clients round
      // in a loop; a bare NOTLEADER makes them wait and retry.
      return notLeaderAt('');
    }
    return notLeader(this.leadership);
  }

  private async onElected(term: LeadershipTerm): Promise<void> {
    this.log.info({ term: term.revision, nodeId: this.nodeId }, 'elected group leader; loading marks from etcd');
    this.loadError = null;
    const current = (): boolean => this.leadership.term === term && this.closing === null;
    let delay = LOAD_RETRY_MIN_MS;
    let failingSince: number | null = null;
    // A failed load leaves nothing behind; each attempt gets a fresh Sequencer.
    while (current()) {
      const store = this.parts.storeFor(term);
      const seq = this.createSequencer(term, store);
      try {
        const { raisedByInitial } = await seq.open();
        if (!current()) {
          seq.abort(notLeader(this.leadership));
          closeQuietly(store);
          return;
        }
        this.loadError = null;
        this.persistFailingSince = null;
        this.sequencer = seq;
        this.store = store;
        this.terms++;
        this.log.info(
          { term: term.revision, sequences: seq.snapshot().length, raisedByInitial },
          'serving as group leader',
        );
        return;
      } catch (err) {
        closeQuietly(store);
        if (!current()) return;
        const message = (err as Error).message;
        // Log each distinct failure once, not every retry.
        if (message !== this.loadError) {
          if (err instanceof StateCorruptError) {
            this.log.error({ err: message }, 'marks in etcd are corrupt; not serving until an operator repairs them');
          } else {
            this.log.warn({ err: message }, 'could not load marks from etcd; retrying');
          }
        }
        this.loadError = message;
        failingSince ??= performance.now();
        // Corrupt marks are corrupt for every node: stepping down would not help.
        if (!(err instanceof StateCorruptError) && this.stepDownIfFailingLong(failingSince, 'loading marks', message, term)) return;
      }
      await new Promise((r) => setTimeout(r, delay).unref());
      delay = Math.min(LOAD_RETRY_MAX_MS, delay * 2);
    }
  }

  /**
   * etcd has failed this leader for longer than the lease: perhaps only this node's
   * path to etcd is broken, so it steps down and holds off for a lease to let another
   * node try. Returns whether it did.
   */
  private stepDownIfFailingLong(since: number, what: string, message: string, term: LeadershipTerm): boolean {
    const failingForMs = performance.now() - since;
    if (failingForMs <= this.ttlMs) return false;
    this.log.error({ err: message, failingForMs: Math.round(failingForMs) }, `${what}: failing for longer than the lease; stepping down`);
    void this.leadership.stepDown(`${what} failed for longer than the lease: ${message}`, { term, holdOffMs: this.ttlMs });
    return true;
  }

  private createSequencer(term: LeadershipTerm, store: Store): Sequencer {
    return new Sequencer({
      store,
      initial: this.config.initial,
      reserve: this.config.reserve,
      maxSequences: this.config.maxSequences,
      leadership: this.leadership,
      events: {
        persisted: this.observer.persisted,
        fenced: (err) => {
          this.log.warn({ err: err.message, term: term.revision }, 'a write of marks was fenced; stepping down');
          void this.leadership.stepDown(`store write fenced: ${err.message}`, { term });
        },
        persistFailed: (err, retryInMs) => {
          this.observer.persistFailed?.(err, retryInMs);
          if (this.persistFailingSince === null) {
            this.persistFailingSince = performance.now();
            this.log.warn({ err: err.message, retryInMs }, 'cannot write marks to etcd; retrying');
          } else {
            this.stepDownIfFailingLong(this.persistFailingSince, 'writes of marks', err.message, term);
          }
        },
        persistRecovered: (downForMs) => {
          this.observer.persistRecovered?.(downForMs);
          this.persistFailingSince = null;
          this.log.info({ downForMs: Math.round(downForMs) }, 'writes of marks to etcd work again');
        },
      },
    });
  }

  private onLost(reason: string): void {
    const seq = this.sequencer;
    const store = this.store;
    this.sequencer = null;
    this.store = null;
    this.loadError = null;
    this.persistFailingSince = null;
    seq?.abort(notLeader(this.leadership));
    // A term's store is fenced on that term: it could only be refused from here on.
    closeQuietly(store);
    if (this.closing) this.log.info({ reason }, 'no longer group leader');
    else this.log.warn({ reason }, 'no longer group leader');
  }

}

/** Closes a term's store; a failure to close one that is no longer used changes nothing. */
function closeQuietly(store: Store | null): void {
  store?.close().catch(() => {});
}
