/**
 * A group member's own state machine (elected, loading, serving, lost), with a
 * fake election and stores whose loads the test releases: the moments a real
 * etcd passes through too fast to observe.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { parseConfig } from '../../src/config.js';
import { SequenceError } from '../../src/core/sequencer.js';
import { FencedError, StateCorruptError } from '../../src/errors.js';
import { numberReply } from '../../src/commands/sequence-reply.js';
import type { Marks, Store } from '../../src/core/ports.js';
import type { LeadershipEvents, LeadershipTerm } from '../../src/election/etcd.js';
import { startGroup, type GroupElection, type GroupHandle } from '../../src/group/node.js';
import { silentLogger } from '../../src/log.js';
import { waitFor } from '../helpers/wait.js';

const SELF = '127.0.0.1:7601';
const SELF_TLS = '127.0.0.1:7611';
const OTHER = '127.0.0.1:7602';

class FakeElection extends EventEmitter<LeadershipEvents> implements GroupElection {
  role: 'leader' | 'follower' | 'candidate' = 'follower';
  term: LeadershipTerm | null = null;
  etcdProblem: string | null = null;
  known: string | null = null;
  knownTls: string | null = null;
  leaseAlive = true;
  stepDowns: string[] = [];
  stepDownOptions: Array<{ term?: LeadershipTerm; holdOffMs?: number }> = [];

  canServe(): boolean {
    return this.role === 'leader' && this.leaseAlive;
  }
  /** As EtcdLeadership: a leader past its deadline does not know who leads next. */
  leaderAddress(): string | null {
    if (this.role === 'leader') return this.canServe() ? SELF : null;
    return this.known;
  }
  leaderTlsAddress(): string | null {
    if (this.role === 'leader') return this.canServe() ? SELF_TLS : null;
    return this.knownTls;
  }
  leaderNodeId(): string | null {
    return null;
  }
  leaseRemainingMs(): number {
    return 0;
  }
  async start(): Promise<void> {}
  async stepDown(reason: string, opts: { term?: LeadershipTerm; holdOffMs?: number } = {}): Promise<void> {
    this.stepDowns.push(reason);
    this.stepDownOptions.push(opts);
    this.lose(reason);
  }
  /** As EtcdLeadership: closing resigns, so a leader loses its term. */
  async close(): Promise<void> {
    if (this.role === 'leader') this.lose('shutting down');
  }

  win(revision: string): LeadershipTerm {
    const term = { key: '/t/leader', revision, leaseId: '1' };
    this.role = 'leader';
    this.term = term;
    this.emit('elected', term);
    return term;
  }

  lose(reason: string, leader: string | null = null): void {
    this.role = 'follower';
    this.term = null;
    this.known = leader;
    this.emit('lost', reason);
  }
}

/** A store whose load() waits until the test says how it ends. */
class HeldStore implements Store {
  readonly description = 'held';
  readonly persisted: Marks[] = [];
  closed = false;
  private settle: { resolve(m: Map<string, bigint>): void; reject(e: Error): void } | null = null;
  private onLoad: () => void = () => {};
  private readonly loaded = new Promise<void>((r) => (this.onLoad = r));

  load(): Promise<Map<string, bigint>> {
    this.onLoad();
    return new Promise((resolve, reject) => (this.settle = { resolve, reject }));
  }
  /** When set, every persist fails, as against an etcd that is down. */
  failPersists = false;

  /** When set, every persist is fenced, as after another node took the leader key. */
  fencePersists = false;

  /** When set, a persist waits for ever, as against an etcd that takes no writes and sends no error. */
  holdPersists = false;

  async persist(marks: Marks): Promise<void> {
    if (this.holdPersists) return new Promise<void>(() => {});
    if (this.fencePersists) throw new FencedError('/t/leader no longer belongs to this term');
    if (this.failPersists) throw new Error('etcd unavailable');
    this.persisted.push(new Map(marks));
  }
  async close(): Promise<void> {
    this.closed = true;
  }

  /** Resolves once the member has asked this store for the marks. */
  asked(): Promise<void> {
    return this.loaded;
  }
  finish(marks: Map<string, bigint>): void {
    this.settle!.resolve(marks);
  }
  fail(message: string | Error): void {
    this.settle!.reject(typeof message === 'string' ? new Error(message) : message);
  }
}

interface Member {
  node: GroupHandle;
  election: FakeElection;
  stores: HeldStore[];
}

/** Wins a term and lets its load finish with `marks`; resolves once the member serves. */
async function serveTerm({ node, election, stores }: Member, revision: string, marks: Map<string, bigint>): Promise<void> {
  const before = stores.length;
  election.win(revision);
  await waitFor(() => stores.length > before, 'a store for the new term');
  const store = stores.at(-1)!;
  await store.asked();
  store.finish(marks);
  await waitFor(() => node.readiness().ready, 'the member to serve');
}

async function member(t: import('node:test').TestContext, extra: string[] = []): Promise<Member> {
  const election = new FakeElection();
  const stores: HeldStore[] = [];
  const config = parseConfig([`--etcd=http://127.0.0.1:1`, '--node-id=a', `--advertise=${SELF}`, ...extra]);
  const node = await startGroup(config, silentLogger(), {}, () => ({
    election,
    storeFor: () => {
      const s = new HeldStore();
      stores.push(s);
      return s;
    },
    close: () => {},
  }));
  t.after(() => node.close());
  return { node, election, stores };
}

const refusal = (r: unknown): { code: string; message: string } => {
  assert.ok(r instanceof SequenceError, `expected a refusal, got ${String(r)}`);
  return { code: r.code, message: r.message };
};

test('a follower names the leader it knows, or none', async (t) => {
  const { node, election } = await member(t);
  assert.deepEqual(refusal(node.allocate('a', 1n)), { code: 'NOTLEADER', message: '' });
  election.known = OTHER;
  assert.deepEqual(refusal(node.allocate('a', 1n)), { code: 'NOTLEADER', message: OTHER });
  assert.deepEqual(refusal(node.current('a')), { code: 'NOTLEADER', message: OTHER });
  assert.equal(node.readiness().ready, false);
});

test("a follower names the leader's TLS address to clients of its TLS port, and no address when it knows none", async (t) => {
  const { node, election } = await member(t);
  election.known = OTHER;
  // A leader without a TLS port (or of a build that did not publish it): a TLS client is sent
  // nowhere in particular, so it tries the other servers it lists, rather than a plain port.
  assert.equal(numberReply(node.allocate('a', 1n), true), '-NOTLEADER\r\n');
  assert.equal(numberReply(node.allocate('a', 1n), false), `-NOTLEADER ${OTHER}\r\n`);
  election.knownTls = '127.0.0.1:7603';
  assert.equal(numberReply(node.allocate('a', 1n), true), '-NOTLEADER 127.0.0.1:7603\r\n');
  assert.equal(numberReply(node.current('a'), true), '-NOTLEADER 127.0.0.1:7603\r\n');
  assert.equal(numberReply(node.allocate('a', 1n), false), `-NOTLEADER ${OTHER}\r\n`);
});

test("requests waiting for storage when the term ends are refused with the leader's TLS address on the TLS port", async (t) => {
  const m = await member(t);
  await serveTerm(m, '9', new Map([['a', 100n]]));
  m.stores.at(-1)!.holdPersists = true;
  // Past the window: each waits for a reservation that never completes.
  const overTls = numberReply(m.node.allocate('a', 1_000_000n), true);
  const overPlain = numberReply(m.node.allocate('a', 1_000_000n), false);
  assert.ok(overTls instanceof Promise && overPlain instanceof Promise, 'both wait for storage');
  m.election.knownTls = '127.0.0.1:7603';
  m.election.lose('lease expired', OTHER);
  assert.equal(await overTls, '-NOTLEADER 127.0.0.1:7603\r\n');
  assert.equal(await overPlain, `-NOTLEADER ${OTHER}\r\n`);
});

test('a leader past its serving deadline names no address, on either port: it does not know who leads next', async (t) => {
  const m = await member(t);
  await serveTerm(m, '9', new Map([['a', 100n]]));
  m.election.leaseAlive = false;
  assert.equal(numberReply(m.node.allocate('a', 1n), true), '-NOTLEADER\r\n');
  assert.equal(numberReply(m.node.allocate('a', 1n), false), '-NOTLEADER\r\n');
});

test('elected but still loading the marks: a bare NOTLEADER, never its own address, and not ready', async (t) => {
  const { node, election, stores } = await member(t);
  election.win('7');
  await stores[0]!.asked();
  // Naming itself would send clients straight back here, round and round.
  assert.deepEqual(refusal(node.allocate('a', 1n)), { code: 'NOTLEADER', message: '' });
  assert.deepEqual(refusal(node.current('a')), { code: 'NOTLEADER', message: '' });
  // On the wire: the code alone, as SPEC section 6 gives it.
  assert.equal(numberReply(node.allocate('a', 1n), false), '-NOTLEADER\r\n');
  assert.equal(numberReply(node.allocate('a', 1n), true), '-NOTLEADER\r\n');
  assert.deepEqual(node.readiness(), { ready: false, reason: 'leader, loading marks from etcd' });

  stores[0]!.finish(new Map([['a', 41n]]));
  await waitFor(() => node.readiness().ready, 'the member to serve');
  assert.equal(await node.allocate('a', 1n), 41n);
  assert.equal(node.readiness().reason, 'leader');
});

test('a failed load says persistence unavailable and is retried with a fresh store', async (t) => {
  const { node, election, stores } = await member(t);
  election.win('8');
  await stores[0]!.asked();
  stores[0]!.fail('etcd unavailable');
  await waitFor(() => node.persistenceFailure() !== null, 'node.persistenceFailure() !== null');
  assert.equal(stores[0]!.closed, true, 'the failed store is closed');
  assert.deepEqual(refusal(node.allocate('a', 1n)), { code: 'ERR', message: 'persistence unavailable: etcd unavailable' });
  assert.match(node.readiness().reason, /cannot load marks: etcd unavailable/);
  // The retry (after about 100 ms) gets a store of its own.
  await waitFor(() => stores.length === 2, 'stores.length === 2');
  await stores[1]!.asked();
  stores[1]!.finish(new Map());
  await waitFor(() => node.readiness().ready, 'the member to serve');
  assert.equal(await node.allocate('a', 1n), 1n);
});

test('loads failing for longer than the lease step down, to let another node try; corrupt marks do not', async (t) => {
  for (const corrupt of [false, true]) {
    const { election, stores } = await member(t, ['--lease-ttl=1']);
    election.win('9');
    const started = performance.now();
    // Fail every load as it comes, for two leases' time at most.
    let failed = 0;
    while (performance.now() - started < 2000 && election.stepDowns.length === 0) {
      await waitFor(() => stores.length > failed || election.stepDowns.length > 0, 'another load or a step-down');
      if (stores.length > failed) {
        await stores[failed]!.asked();
        stores[failed]!.fail(corrupt ? new StateCorruptError('/t/marks/a', 'not a number') : new Error('etcd unavailable'));
        failed++;
      }
    }
    if (corrupt) {
      assert.deepEqual(election.stepDowns, [], 'another node would find the same marks');
    } else {
      assert.equal(election.stepDowns.length, 1);
      assert.match(election.stepDowns[0]!, /loading marks failed for longer than the lease: etcd unavailable/);
      // Holding off for a lease lets another node win the next election.
      assert.equal(election.stepDownOptions[0]!.holdOffMs, 1000);
      assert.equal(election.stepDownOptions[0]!.term?.revision, '9');
      assert.ok(performance.now() - started >= 1000, 'not before a lease has passed');
    }
  }
});

test('writes of marks failing for longer than the lease step down too', async (t) => {
  const m = await member(t, ['--lease-ttl=1']);
  await serveTerm(m, '9', new Map([['a', 100n]]));
  const started = performance.now();
  m.stores.at(-1)!.failPersists = true;
  // Past the window: the reservation it needs fails, and is retried with backoff.
  assert.equal(refusal(await Promise.resolve(m.node.allocate('a', 1_000_000n)).catch((e: unknown) => e)).code, 'ERR');
  // Meanwhile it cannot hand out numbers past its mark: not ready, as a single node with failing storage.
  assert.deepEqual(m.node.readiness(), { ready: false, reason: 'leader; persistence unavailable: etcd unavailable' });
  await waitFor(() => m.election.stepDowns.length > 0, 'a step-down', 10_000);
  assert.match(m.election.stepDowns[0]!, /writes of marks failed for longer than the lease: etcd unavailable/);
  assert.equal(m.election.stepDownOptions[0]!.holdOffMs, 1000);
  assert.equal(m.election.stepDownOptions[0]!.term?.revision, '9');
  assert.ok(performance.now() - started >= 1000, 'not before a lease has passed');
});

test('a fenced write steps this term down at once: waiters and later requests get a bare NOTLEADER', async (t) => {
  const m = await member(t);
  await serveTerm(m, '9', new Map([['a', 100n]]));
  m.stores.at(-1)!.fencePersists = true;
  // Past the window: the reservation it needs is the fenced write.
  const waiter = await Promise.resolve(m.node.allocate('a', 1_000_000n)).catch((e: unknown) => e);
  assert.equal(refusal(waiter).code, 'NOTLEADER');
  await waitFor(() => m.election.stepDowns.length > 0, 'a step-down');
  assert.match(m.election.stepDowns[0]!, /store write fenced/);
  assert.equal(m.election.stepDownOptions[0]!.term?.revision, '9');
  // Who leads now is not known here: clients wait and retry rather than come back.
  assert.deepEqual(refusal(m.node.allocate('a', 1n)), { code: 'NOTLEADER', message: '' });
});

test('losing leadership stops serving at once; a later term loads the marks afresh', async (t) => {
  const m = await member(t);
  const { node, election, stores } = m;
  assert.equal(node.termsServed(), 0);
  await serveTerm(m, '9', new Map([['a', 100n]]));
  assert.equal(node.termsServed(), 1);
  assert.equal(await node.allocate('a', 1n), 100n);

  assert.equal(stores[0]!.closed, false, 'the serving term keeps its store open');
  election.lose('lease expired', OTHER);
  assert.deepEqual(refusal(node.allocate('a', 1n)), { code: 'NOTLEADER', message: OTHER });
  assert.equal(stores[0]!.closed, true, "the lost term's store is closed");

  // Elected again: nothing from the old term is trusted, the new store is asked.
  election.win('12');
  await stores[1]!.asked();
  assert.deepEqual(refusal(node.allocate('a', 1n)), { code: 'NOTLEADER', message: '' });
  stores[1]!.finish(new Map([['a', 500n]]));
  await waitFor(() => node.readiness().ready, 'the member to serve');
  assert.equal(await node.allocate('a', 1n), 500n);
  assert.equal(node.termsServed(), 2);

  // A clean stop writes the exact next number through the term's store, then closes it.
  assert.equal(await node.close(), true, 'the exact next numbers are stored');
  assert.deepEqual(stores[1]!.persisted.at(-1), new Map([['a', 501n]]));
  assert.equal(stores[1]!.closed, true);
});

test("a load that lands after its term ended is dropped: the next term serves its own load's marks", async (t) => {
  const { node, election, stores } = await member(t);
  election.win('9');
  await stores[0]!.asked();
  election.lose('lease expired', OTHER);
  election.win('12');
  await stores[1]!.asked();
  // Term 9's load lands now, with marks older than term 12 may find.
  stores[0]!.finish(new Map([['a', 100n]]));
  await waitFor(() => stores[0]!.closed, "the lost term's store to be closed");
  assert.equal(node.readiness().ready, false, 'still loading for term 12');
  assert.deepEqual(refusal(node.current('a')), { code: 'NOTLEADER', message: '' });
  assert.deepEqual(refusal(node.allocate('a', 1n)), { code: 'NOTLEADER', message: '' });
  stores[1]!.finish(new Map([['a', 500n]]));
  await waitFor(() => node.readiness().ready, 'the member to serve');
  assert.equal(node.current('a'), 500n);
  assert.equal(await node.allocate('a', 1n), 500n);
  assert.equal(node.termsServed(), 1, 'term 9 never served');
});

test('a clean stop that cannot store the exact next numbers says so (the process exits 1)', async (t) => {
  const m = await member(t);
  await serveTerm(m, '9', new Map([['a', 100n]]));
  assert.equal(await m.node.allocate('a', 1n), 100n);
  const store = m.stores.at(-1)!;
  const written = store.persisted.length;
  store.failPersists = true;
  assert.equal(await m.node.close(), false);
  assert.equal(store.persisted.length, written, 'nothing stored');
  assert.equal(store.closed, true);
});

test('a leader whose lease is not confirmed refuses with NOTLEADER and is not ready', async (t) => {
  const m = await member(t);
  await serveTerm(m, '10', new Map());
  const { node, election } = m;
  election.leaseAlive = false;
  // Which address it names is the election's to say (tested against etcd in etcd-election.test.ts).
  assert.equal(refusal(node.allocate('a', 1n)).code, 'NOTLEADER');
  assert.deepEqual(node.readiness(), { ready: false, reason: 'leader, but the lease is not confirmed by etcd' });
});
