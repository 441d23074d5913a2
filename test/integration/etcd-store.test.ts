/**
 * Marks in etcd: exact 64-bit round trips, corrupt state refused by name,
 * bounded failure when etcd is unreachable, and whole group members handing
 * out unique increasing numbers across a clean handover (no gap) and a
 * leader cut off like a crash (a gap of at most --reserve).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AlarmAction, AlarmType, type Etcd3, type ITxnResponse } from 'etcd3';
import { parseConfig } from '../../src/config.js';
import { END } from '../../src/core/limits.js';
import { SequenceError, type SequenceSource } from '../../src/core/sequencer.js';
import { createEtcdClient, EtcdLeadership, type LeadershipTerm } from '../../src/election/etcd.js';
import { PersistenceError, StateCorruptError } from '../../src/errors.js';
import { startGroup, type GroupElection, type GroupHandle } from '../../src/group/node.js';
import { silentLogger } from '../../src/log.js';
import { EtcdStore } from '../../src/store/etcd.js';
import { etcdConnection as conn, startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { waitFor } from '../helpers/wait.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

async function take(source: SequenceSource, name = 'default', count = 1n): Promise<bigint> {
  let r: bigint | SequenceError;
  try {
    r = await source.allocate(name, count);
  } catch (err) {
    // Requests that waited for a write are refused by rejecting with the SequenceError.
    r = err as SequenceError;
  }
  if (r instanceof SequenceError) throw new Error(`-${r.code} ${r.message}`);
  return r;
}

function refusal(source: SequenceSource): SequenceError | null {
  const r = source.current('default');
  return r instanceof SequenceError ? r : null;
}

describe('etcd store', () => {
  let cluster: EtcdCluster;
  let direct: Etcd3;
  const closers: Array<() => Promise<void> | void> = [];
  const proxies: TcpProxy[] = [];
  let prefixes = 0;
  const freshPrefix = (): string => `/store-test-${++prefixes}/`;

  /** Elects a lone leader on `prefix`, so stores have a term to fence on. */
  async function lead(prefix: string): Promise<LeadershipTerm> {
    const client = createEtcdClient(conn(cluster.endpoints));
    const leadership = new EtcdLeadership({
      client,
      connection: conn(cluster.endpoints),
      prefix,
      nodeId: 'solo',
      advertise: '127.0.0.1:7000',
      leaseTtl: 5,
      log: silentLogger(),
    });
    closers.push(async () => {
      await leadership.close();
      client.close();
    });
    await leadership.start();
    await waitFor(() => leadership.canServe(), 'the lone node to lead');
    return leadership.term!;
  }

  async function proxy(): Promise<TcpProxy> {
    const p = await startTcpProxy({ host: '127.0.0.1', port: Number(new URL(cluster.endpoints[0]!).port) });
    proxies.push(p);
    return p;
  }

  async function group(prefix: string, id: string, port: number, extra: string[] = [], endpoint?: string): Promise<GroupHandle> {
    const config = parseConfig([
      `--etcd=${endpoint ?? cluster.endpoints[0]}`,
      `--node-id=${id}`,
      `--advertise=127.0.0.1:${port}`,
      `--etcd-prefix=${prefix}`,
      '--lease-ttl=2',
      ...extra,
    ]);
    const handle = await startGroup(config, silentLogger());
    closers.push(async () => {
      await handle.close();
    });
    return handle;
  }

  before(async () => {
    cluster = await startEtcdCluster({ size: 1 });
    direct = createEtcdClient(conn(cluster.endpoints));
  });

  after(async () => {
    for (const p of proxies) p.blackhole(false);
    for (const close of closers.reverse()) await close();
    for (const p of proxies) await p.close();
    direct?.close();
    await cluster?.close();
  });

  test('marks are loaded page by page: every one of 300, whatever the page size', async () => {
    const prefix = freshPrefix();
    const term = await lead(prefix);
    const marks = new Map<string, bigint>();
    for (let i = 0; i < 300; i++) marks.set(`s${i}`, BigInt(i) * 1_000_003n);
    // More marks than one transaction takes: persist splits them.
    await new EtcdStore(direct, prefix, term).persist(marks);
    for (const pageSize of [1, 7, 100, 300, 301]) {
      assert.deepEqual(await new EtcdStore(direct, prefix, term, undefined, pageSize).load(), marks, `pages of ${pageSize}`);
    }
  });

  test('marks round-trip exactly beyond 2^53, up to 2^63, as decimal text', async () => {
    const prefix = freshPrefix();
    const term = await lead(prefix);
    const store = new EtcdStore(direct, prefix, term);
    assert.deepEqual(await store.load(), new Map());
    const marks = new Map<string, bigint>([
      ['zero', 0n],
      ['past-2-53', (1n << 53n) + 1n],
      ['max', (1n << 63n) - 1n],
      ['exhausted', END],
    ]);
    await store.persist(marks);
    assert.equal(await direct.get(`${prefix}marks/past-2-53`).string(), '9007199254740993');
    assert.deepEqual(await new EtcdStore(direct, prefix, term).load(), marks);
    // Only the given marks change; the others keep their stored values.
    await store.persist(new Map([['zero', 5n]]));
    assert.deepEqual(await new EtcdStore(direct, prefix, term).load(), new Map([...marks, ['zero', 5n]]));
    // A mark past 2^63 would make the marks unloadable for every member: refused, nothing written.
    await assert.rejects(store.persist(new Map([['zero', 6n], ['max', END + 1n]])), RangeError);
    await assert.rejects(store.persist(new Map([['zero', -1n]])), RangeError);
    assert.deepEqual(await new EtcdStore(direct, prefix, term).load(), new Map([...marks, ['zero', 5n]]));
  });

  test('more marks than one etcd transaction may hold are written in several', async () => {
    const prefix = freshPrefix();
    const term = await lead(prefix);
    const store = new EtcdStore(direct, prefix, term);
    await store.load();
    const marks = new Map<string, bigint>();
    for (let i = 0; i < 300; i++) marks.set(`s${i}`, BigInt(i) * 1_000_000_007n);
    await store.persist(marks);
    assert.deepEqual(await new EtcdStore(direct, prefix, term).load(), marks);
  });

  for (const [what, key, value] of [
    ['a value that is not a number', 'marks/bad', '12x'],
    ['a value above 2^63', 'marks/big', '9223372036854775809'],
    ['a negative value', 'marks/neg', '-1'],
    ['an empty value', 'marks/empty', ''],
    ['a value with a trailing newline', 'marks/nl', '5\n'],
    ['a key that is not a sequence name', 'marks/no spaces', '10'],
  ] as const) {
    test(`load refuses ${what}, naming the key`, async () => {
      const prefix = freshPrefix();
      const term = await lead(prefix);
      await direct.put(`${prefix}marks/good`).value('7');
      await direct.put(prefix + key).value(value);
      await assert.rejects(new EtcdStore(direct, prefix, term).load(), (err: unknown) => {
        assert.ok(err instanceof StateCorruptError);
        assert.equal(err.file, prefix + key);
        assert.ok(err.message.startsWith(`etcd key ${prefix + key} is unreadable (`), err.message);
        assert.match(err.message, /etcdctl put /);
        if (key !== 'marks/no spaces') assert.ok(err.message.includes(`found ${JSON.stringify(value)})`), err.message);
        return true;
      });
    });
  }

  test('a write of ours that lands late cannot stop the next one, which goes on top', async () => {
    const prefix = freshPrefix();
    const term = await lead(prefix);
    const store = new EtcdStore(direct, prefix, term);
    await store.load();
    await store.persist(new Map([['s', 100n]]));
    // What a timed-out write of this leader does when etcd applies it after all.
    await direct.put(`${prefix}marks/s`).value('150');
    await direct.put(`${prefix}writer`).value(term.revision);
    await store.persist(new Map([['s', 200n]]));
    assert.equal(await direct.get(`${prefix}marks/s`).string(), '200');
  });

  test('a lower write of ours that reaches etcd after a higher one is refused there: the higher mark stays', async () => {
    // The core does write lower marks after higher ones: the exact marks at a clean
    // stop, and a retry once the requests that wanted more are gone. Only the writer
    // key keeps such a write, given up on and landing late, from lowering the mark.
    const prefix = freshPrefix();
    const term = await lead(prefix);
    let holdNext = false;
    let release: () => void = () => {};
    let landed: Promise<ITxnResponse> | null = null;
    const kv = new Proxy(direct.kv, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (prop !== 'txn') return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        return (req: Parameters<typeof target.txn>[0]) => {
          if (!holdNext) return target.txn(req);
          // Held on its way, as a slow etcd member would forward it.
          holdNext = false;
          landed = new Promise<void>((resolve) => (release = resolve)).then(() => target.txn(req));
          return landed;
        };
      },
    });
    const client = new Proxy(direct, { get: (target, prop) => (prop === 'kv' ? kv : Reflect.get(target, prop)) });
    const store = new EtcdStore(client, prefix, term, 300);
    await store.load();
    await store.persist(new Map([['s', 1000n]]));
    holdNext = true;
    await assert.rejects(store.persist(new Map([['s', 900n]])), PersistenceError);
    // Confirmed: numbers up to 2999 may now be handed out.
    await store.persist(new Map([['s', 3000n]]));
    release();
    const late = await landed!;
    assert.equal(late.succeeded, false, 'etcd refused the late write');
    assert.equal(await direct.get(`${prefix}marks/s`).string(), '3000');
  });

  test('the fence checks the key\'s lease and its revision: a term that differs in either cannot write', async () => {
    const prefix = freshPrefix();
    const term = await lead(prefix);
    const others: LeadershipTerm[] = [
      // As after etcd is restored from a backup, when revisions start over and an old
      // term's revision may come again with a new key.
      { ...term, leaseId: String(BigInt(term.leaseId) + 1n) },
      // As when the leader key is deleted and created again under the same lease: another term.
      { ...term, revision: String(BigInt(term.revision) + 1n) },
    ];
    for (const other of others) {
      const store = new EtcdStore(direct, prefix, other);
      await store.load();
      await assert.rejects(store.persist(new Map([['s', 5n]])), { name: 'FencedError' }, JSON.stringify(other));
      assert.equal(await direct.get(`${prefix}marks/s`).string(), null);
    }
    // The true term writes.
    await new EtcdStore(direct, prefix, term).persist(new Map([['s', 5n]]));
    assert.equal(await direct.get(`${prefix}marks/s`).string(), '5');
  });

  test('with etcd unreachable, persist fails within its deadline with PersistenceError, and works again after', async () => {
    const prefix = freshPrefix();
    const term = await lead(prefix);
    const p = await proxy();
    const client = createEtcdClient(conn([p.url]));
    closers.push(() => client.close());
    const store = new EtcdStore(client, prefix, term, 500);
    await store.load();
    await store.persist(new Map([['s', 10n]]));

    p.blackhole(true);
    const t0 = performance.now();
    await assert.rejects(store.persist(new Map([['s', 20n]])), (err: unknown) => {
      assert.ok(err instanceof PersistenceError);
      assert.match(err.message, /writing marks in etcd: etcd did not answer .* within 500 ms; check that a majority/);
      return true;
    });
    assert.ok(performance.now() - t0 < 1500);

    p.blackhole(false);
    await waitFor(
      () => store.persist(new Map([['s', 30n]])).then(() => true, () => false),
      'a write after the network healed',
    );
    assert.equal(await direct.get(`${prefix}marks/s`).string(), '30');
  });

  test("every term's store writes reach the observer given to startGroup (the metrics)", async () => {
    const prefix = freshPrefix();
    let persisted = 0;
    const config = parseConfig([
      `--etcd=${cluster.endpoints[0]}`,
      '--node-id=observed',
      '--advertise=127.0.0.1:7301',
      `--etcd-prefix=${prefix}`,
      '--reserve=0',
    ]);
    const handle = await startGroup(config, silentLogger(), { persisted: () => persisted++ });
    closers.push(async () => {
      await handle.close();
    });
    await waitFor(() => handle.readiness().ready, 'the member to lead');
    await take(handle);
    await take(handle);
    assert.ok(persisted >= 2, `${persisted} writes observed`);
    // A second term gets a store of its own, and its writes are observed too.
    const election = handle.leadership as GroupElection;
    const firstTerm = election.term;
    await election.stepDown('test: a new term');
    await waitFor(() => handle.readiness().ready && election.term !== firstTerm, 'the member to lead a new term');
    const before = persisted;
    await take(handle);
    assert.ok(persisted > before, `the second term's write observed (${persisted} after ${before})`);
  });

  test('two groups on one etcd under different prefixes lead and count independently', async () => {
    const [p1, p2] = [freshPrefix(), freshPrefix()];
    const a = await group(p1, 'a', 7201, ['--initial=1', '--reserve=0']);
    const b = await group(p2, 'b', 7202, ['--initial=1000', '--reserve=0']);
    await waitFor(() => a.readiness().ready && b.readiness().ready, 'both groups to have a leader');
    assert.equal(await take(a), 1n);
    assert.equal(await take(b), 1000n);
    assert.equal(await take(a), 2n);
    assert.equal(await take(b), 1001n);
    // Each group's mark lives under its own prefix and covers only its own numbers.
    const m1 = BigInt((await direct.get(`${p1}marks/default`).string())!);
    const m2 = BigInt((await direct.get(`${p2}marks/default`).string())!);
    assert.deepEqual([m1, m2], [3n, 1002n]);
  });

  test('two members: unique increasing numbers across a clean handover, with no gap', async () => {
    const prefix = freshPrefix();
    const a = await group(prefix, 'a', 7101, ['--reserve=1000']);
    await waitFor(() => a.readiness().ready, 'a to serve');
    const b = await group(prefix, 'b', 7102, ['--reserve=1000']);
    await waitFor(() => a.readiness().ready && refusal(b)?.message === '127.0.0.1:7101', 'b to redirect to a');
    assert.equal(refusal(b)?.code, 'NOTLEADER');
    assert.match(b.readiness().reason, /follower; the leader is 127\.0\.0\.1:7101/);
    assert.deepEqual(b.snapshot(), []);
    assert.equal(a.leadership.role, 'leader');
    assert.equal(Object.fromEntries(a.info()).leader, '127.0.0.1:7101');

    const seen: bigint[] = [];
    for (let i = 0; i < 20; i++) seen.push(await take(a));
    const batch = await take(a, 'default', 10n);
    for (let i = 0n; i < 10n; i++) seen.push(batch + i);
    const other = await take(a, 'orders');

    await a.close();
    await waitFor(() => b.readiness().ready, 'b to take over');
    assert.equal(b.current('default'), seen.at(-1)! + 1n, 'no gap after a clean handover');
    for (let i = 0; i < 5; i++) seen.push(await take(b));
    assert.equal(await take(b, 'orders'), other + 1n);
    assert.deepEqual(seen, seen.map((_, i) => 1n + BigInt(i)), 'every number once, in order, none skipped');
  });

  test('a leader whose writes keep failing for longer than its lease steps down, and leads again once etcd takes writes', async () => {
    const prefix = freshPrefix();
    const a = await group(prefix, 'a', 7401, ['--reserve=0']);
    await waitFor(() => a.readiness().ready, 'a to serve');
    const last = await take(a);
    // etcd's "database space exceeded" alarm refuses writes while leases still renew.
    const memberID = (await direct.maintenance.status({})).header.member_id;
    await direct.maintenance.alarm({ action: AlarmAction.Activate, memberID, alarm: AlarmType.Nospace });
    try {
      await assert.rejects(take(a), /-ERR persistence unavailable: writing marks in etcd: .*database space exceeded/);
      await waitFor(() => a.leadership.role !== 'leader', 'a to step down', 8000);
      assert.equal(a.readiness().ready, false);
    } finally {
      await direct.maintenance.alarm({ action: AlarmAction.Deactivate, memberID, alarm: AlarmType.Nospace });
    }
    await waitFor(() => a.readiness().ready, 'a to lead again', 8000);
    assert.equal(await take(a), last + 1n, 'the refused request took no number');
  });

  for (const reserve of [100n, 0n]) {
    test(`a leader cut off like a crash: the next leader skips at most --reserve=${reserve}`, async () => {
      const prefix = freshPrefix();
      const p = await proxy();
      const a = await group(prefix, 'a', 7201, [`--reserve=${reserve}`], p.url);
      await waitFor(() => a.readiness().ready, 'a to serve');
      const b = await group(prefix, 'b', 7202, [`--reserve=${reserve}`]);
      await waitFor(() => refusal(b)?.message === '127.0.0.1:7201', 'b to redirect to a');

      let last = 0n;
      for (let i = 0; i < 7; i++) {
        const n = await take(a);
        assert.ok(n > last);
        last = n;
      }

      p.blackhole(true);
      await waitFor(() => refusal(a)?.code === 'NOTLEADER', 'a to stop serving by itself', 3000);
      await waitFor(() => b.readiness().ready, 'b to take over', 8000);
      const first = await take(b);
      assert.ok(first > last, `${first} follows ${last}`);
      assert.ok(first - last - 1n <= reserve, `skipped ${first - last - 1n}, at most ${reserve}`);

      p.blackhole(false);
      await waitFor(() => refusal(a)?.message === '127.0.0.1:7202', 'a to rejoin and redirect to b', 10_000);
      assert.ok((await take(b)) > first);
    });
  }
});

describe('group on a three-member etcd', () => {
  let cluster: EtcdCluster;
  const handles: GroupHandle[] = [];

  /** Takes numbers one after another for `ms`, every reply waiting for its write (--reserve=0). */
  /** A reply this slow waited out a call to a member that does not answer (ATTEMPT_MS is 1 s). */
  const SLOW_MS = 500;

  async function drive(source: SequenceSource, ms: number): Promise<{ numbers: bigint[]; errors: string[]; slowestMs: number; slow: number }> {
    const numbers: bigint[] = [];
    const errors: string[] = [];
    let slowestMs = 0;
    let slow = 0;
    const until = performance.now() + ms;
    while (performance.now() < until) {
      const t0 = performance.now();
      try {
        numbers.push(await take(source));
      } catch (err) {
        errors.push((err as Error).message);
        await new Promise((r) => setTimeout(r, 20));
      }
      const tookMs = performance.now() - t0;
      slowestMs = Math.max(slowestMs, tookMs);
      if (tookMs >= SLOW_MS) slow++;
    }
    return { numbers, errors, slowestMs, slow };
  }

  const consecutive = (ns: bigint[]): boolean => ns.every((n, i) => i === 0 || n === ns[i - 1]! + 1n);

  /**
   * No error, numbers all along, no request held for as long as a lease (2 s: a
   * failover's worth), and at most one that waited out a call to the member that
   * does not answer: after that, it is passed over while the others answer. Every
   * request waits for an etcd write (--reserve=0), so it sees each such call.
   */
  function assertAvailable(r: { numbers: bigint[]; errors: string[]; slowestMs: number; slow: number }): void {
    assert.deepEqual(r.errors, []);
    assert.ok(r.numbers.length >= 20, `only ${r.numbers.length} numbers`);
    assert.ok(consecutive(r.numbers));
    assert.ok(r.slowestMs < 2000, `a request waited ${r.slowestMs.toFixed(0)} ms`);
    assert.ok(r.slow <= 1, `${r.slow} requests waited ${SLOW_MS} ms or more`);
  }

  before(async () => {
    cluster = await startEtcdCluster({ size: 3 });
  });

  after(async () => {
    for (const h of handles) await h.close();
    await cluster?.close();
  });

  test('a paused, then a killed etcd follower member costs no availability', async (t) => {
    const config = parseConfig([
      `--etcd=${cluster.endpoints.join(',')}`,
      '--node-id=a',
      '--advertise=127.0.0.1:7301',
      '--etcd-prefix=/three/',
      '--lease-ttl=2',
      '--reserve=0',
    ]);
    const a = await startGroup(config, silentLogger());
    handles.push(a);
    await waitFor(() => a.readiness().ready, 'a to serve');
    const etcdLeader = await cluster.leaderIndex();
    assert.notEqual(etcdLeader, null);
    const victim = (etcdLeader! + 1) % 3;

    cluster.pause(victim);
    const paused = await drive(a, 3000);
    cluster.resume(victim);
    t.diagnostic(`member paused: ${paused.numbers.length} numbers, slowest reply ${paused.slowestMs.toFixed(0)} ms, ${paused.slow} slow`);
    assertAvailable(paused);

    await cluster.kill(victim);
    const killed = await drive(a, 2000);
    t.diagnostic(`member killed: ${killed.numbers.length} numbers, slowest reply ${killed.slowestMs.toFixed(0)} ms, ${killed.slow} slow`);
    assertAvailable(killed);
    assert.equal(killed.numbers[0], paused.numbers.at(-1)! + 1n);
    await cluster.start(victim);
  });
});
