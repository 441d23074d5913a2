/**
 * Leader election on a real etcd: one leader at a time, quick handover on
 * resign, fencing of a deposed leader's writes, and a cut-off leader that stops
 * serving by itself before etcd could let anyone else lead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CompareTarget, type Etcd3 } from 'etcd3';
import { createEtcdClient, EtcdLeadership, type EtcdLeadershipOptions } from '../../src/election/etcd.js';
import { winnersPrefix } from '../../src/election/winners.js';
import { EtcdStore } from '../../src/store/etcd.js';
import { parseConfig, type Config } from '../../src/config.js';
import { startGroup, type GroupHandle } from '../../src/group/node.js';
import { silentLogger, type Logger } from '../../src/log.js';
import { etcdConnection as conn, startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { waitFor } from '../helpers/wait.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { captureLog } from '../helpers/log-capture.js';

type LeaseKeepAlive = Etcd3['leaseClient']['leaseKeepAlive'];

interface Node {
  readonly leadership: EtcdLeadership;
  readonly client: Etcd3;
  readonly lost: string[];
}

describe('etcd leadership', () => {
  let cluster: EtcdCluster;
  let direct: Etcd3;
  const nodes: Node[] = [];
  const proxies: TcpProxy[] = [];
  let prefixes = 0;

  /**
   * a leads and stores s=100 through a store of its term, then resigns to b;
   * returns both terms' stores, the new one loaded (and checked to see s=100).
   */
  async function handOver(prefix: string): Promise<{ oldStore: EtcdStore; newStore: EtcdStore }> {
    const a = await startNode(prefix, 'a');
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const oldStore = new EtcdStore(a.client, prefix, a.leadership.term!);
    await oldStore.load();
    await oldStore.persist(new Map([['s', 100n]]));
    const b = await startNode(prefix, 'b');
    await a.leadership.resign();
    await waitFor(() => b.leadership.canServe(), 'b to lead');
    const newStore = new EtcdStore(b.client, prefix, b.leadership.term!);
    assert.deepEqual(await newStore.load(), new Map([['s', 100n]]));
    return { oldStore, newStore };
  }

  async function startNode(
    prefix: string,
    id: string,
    opts: {
      endpoints?: readonly string[];
      /** Where the shared client (campaigns, watch, polls, writes) connects, if not `endpoints`; renewals keep to `endpoints`. */
      clientEndpoints?: readonly string[];
      ttl?: number;
      wallClock?: () => number;
      log?: Logger;
      beforeStart?: (client: Etcd3) => void;
      keepaliveClient?: EtcdLeadershipOptions['keepaliveClient'];
      /** The TLS address it publishes; by default one of its own, null for none. */
      advertiseTls?: string | null;
    } = {},
  ): Promise<Node> {
    const connection = conn(opts.endpoints ?? cluster.endpoints);
    const client = createEtcdClient(opts.clientEndpoints ? conn(opts.clientEndpoints) : connection);
    opts.beforeStart?.(client);
    const leadership = new EtcdLeadership({
      client,
      connection,
      prefix,
      nodeId: id,
      advertise: `127.0.0.1:${7000 + nodes.length}`,
      advertiseTls: opts.advertiseTls === undefined ? `127.0.0.1:${8000 + nodes.length}` : opts.advertiseTls,
      leaseTtl: opts.ttl ?? 2,
      log: opts.log ?? silentLogger(),
      ...(opts.wallClock ? { wallClock: opts.wallClock } : {}),
      ...(opts.keepaliveClient ? { keepaliveClient: opts.keepaliveClient } : {}),
    });
    const node: Node = { leadership, client, lost: [] };
    leadership.on('lost', (reason) => node.lost.push(reason));
    nodes.push(node);
    await leadership.start();
    return node;
  }

  const freshPrefix = (): string => `/election-test-${++prefixes}/`;

  /** A keepaliveClient whose renewals go through what `wrap` makes of the real call. */
  const renewalsThrough =
    (wrap: (keepAlive: LeaseKeepAlive) => LeaseKeepAlive): EtcdLeadershipOptions['keepaliveClient'] =>
    (connection, endpoint) => {
      const client = createEtcdClient(connection, [endpoint]);
      const leases = client.leaseClient;
      leases.leaseKeepAlive = wrap(leases.leaseKeepAlive.bind(leases));
      return client;
    };

  /**
   * Asks both at every turn of the event loop until `b` has served for half a second;
   * returns how many turns found both serving.
   */
  async function overlapsUntilServing(a: Node, b: Node, limitMs = 8000): Promise<number> {
    const deadline = performance.now() + limitMs;
    let overlaps = 0;
    let bServedAt = 0;
    while (bServedAt === 0 || performance.now() - bServedAt < 500) {
      assert.ok(performance.now() < deadline, `${b.leadership.nodeId} to serve (it is ${b.leadership.role})`);
      const [aServes, bServes] = [a.leadership.canServe(), b.leadership.canServe()];
      if (aServes && bServes) overlaps++;
      if (bServes && bServedAt === 0) bServedAt = performance.now();
      await new Promise((r) => setImmediate(r));
    }
    return overlaps;
  }

  /** Node a leads with its etcd traffic through a proxy the test can cut (all of it, or with 'clientEndpoints' only its watch and polls). */
  async function leaderAlone(prefix: string, through: 'endpoints' | 'clientEndpoints', ttl = 2): Promise<{ proxy: TcpProxy; a: Node }> {
    const proxy = await proxiedEtcd();
    const a = await startNode(prefix, 'a', { [through]: [proxy.url], ttl });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    return { proxy, a };
  }

  /**
   * Node a leads with its etcd traffic through a proxy the test can cut (all of it, or
   * with 'clientEndpoints' only its watch and polls); node b follows and knows a leads.
   */
  async function leaderBehindProxy(prefix: string, through: 'endpoints' | 'clientEndpoints', ttl = 2): Promise<{ proxy: TcpProxy; a: Node; b: Node }> {
    const { proxy, a } = await leaderAlone(prefix, through, ttl);
    const b = await startNode(prefix, 'b', { ttl });
    await waitFor(() => b.leadership.leaderNodeId() === 'a', 'b to know a leads');
    return { proxy, a, b };
  }

  /** A TCP proxy in front of the cluster's etcd, closed with the others at the end. */
  async function proxiedEtcd(): Promise<TcpProxy> {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: Number(new URL(cluster.endpoints[0]!).port) });
    proxies.push(proxy);
    return proxy;
  }

  before(async () => {
    cluster = await startEtcdCluster({ size: 1 });
    direct = createEtcdClient(conn(cluster.endpoints));
  });

  after(async () => {
    for (const p of proxies) p.blackhole(false);
    for (const n of nodes) {
      await n.leadership.close();
      n.client.close();
    }
    for (const p of proxies) await p.close();
    direct?.close();
    await cluster?.close();
  });

  test('of two nodes exactly one leads, and keeps leading across several lease TTLs', async () => {
    const prefix = freshPrefix();
    // A TTL of 2 s serves 1.5 s per renewal: a stall of a few hundred ms on a loaded machine must not end it.
    const a = await startNode(prefix, 'a', { ttl: 2 });
    const b = await startNode(prefix, 'b', { ttl: 2 });
    await waitFor(() => a.leadership.canServe() || b.leadership.canServe(), 'a leader');
    const [leader, follower] = a.leadership.role === 'leader' ? [a, b] : [b, a];
    assert.equal(follower.leadership.role, 'follower');
    assert.equal(follower.leadership.leaderAddress(), leader.leadership.leaderAddress());
    assert.equal(follower.leadership.leaderTlsAddress(), leader.leadership.leaderTlsAddress());
    assert.match(String(follower.leadership.leaderTlsAddress()), /^127\.0\.0\.1:80\d\d$/);
    assert.equal(follower.leadership.leaderNodeId(), leader.leadership.nodeId);

    // Two TTLs: the lease must be kept alive, and the follower must never lead meanwhile.
    const until = performance.now() + 4000;
    while (performance.now() < until) {
      assert.equal(leader.leadership.canServe(), true, 'the leader kept serving');
      assert.equal(follower.leadership.canServe(), false, 'the follower never served');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(leader.lost, []);
    const stored = await direct.get(`${prefix}leader`).json();
    assert.deepEqual(stored, {
      nodeId: leader.leadership.nodeId,
      advertise: leader.leadership.leaderAddress(),
      advertiseTls: leader.leadership.leaderTlsAddress(),
    });
  });

  test('a leader key without a usable TLS address (a leader with no TLS port, an earlier build, a wrong type): the TLS address is not known, the plain one is', async () => {
    for (const advertiseTls of [null, 5]) {
      const prefix = freshPrefix();
      const { ID: lease } = await direct.leaseClient.leaseGrant({ TTL: 30 });
      const value = JSON.stringify({ nodeId: 'old', advertise: '127.0.0.1:6999', ...(advertiseTls === null ? {} : { advertiseTls }) });
      await direct.put(`${prefix}leader`).value(value).lease(lease);
      try {
        const b = await startNode(prefix, 'b');
        await waitFor(() => b.leadership.leaderAddress() !== null, 'b to learn of the leader');
        assert.equal(b.leadership.leaderAddress(), '127.0.0.1:6999');
        assert.equal(b.leadership.leaderTlsAddress(), null, `advertiseTls ${JSON.stringify(advertiseTls)}`);
      } finally {
        await direct.leaseClient.leaseRevoke({ ID: lease });
      }
    }
  });

  test('a leader key whose TLS address alone changes is announced, with both addresses', async () => {
    const prefix = freshPrefix();
    const { ID: lease } = await direct.leaseClient.leaseGrant({ TTL: 30 });
    const key = (tls: string) => JSON.stringify({ nodeId: 'old', advertise: '127.0.0.1:6999', advertiseTls: tls });
    await direct.put(`${prefix}leader`).value(key('127.0.0.1:8999')).lease(lease);
    try {
      const b = await startNode(prefix, 'b');
      const seen: Array<[string | null, string | null]> = [];
      b.leadership.on('leaderChanged', (address, tlsAddress) => seen.push([address, tlsAddress]));
      await waitFor(() => b.leadership.leaderTlsAddress() === '127.0.0.1:8999', 'b to read the key');
      await direct.put(`${prefix}leader`).value(key('127.0.0.1:8997')).lease(lease);
      await waitFor(() => seen.length > 0 && seen.at(-1)![1] === '127.0.0.1:8997', 'the new TLS address to be announced');
      assert.deepEqual(seen.at(-1), ['127.0.0.1:6999', '127.0.0.1:8997']);
    } finally {
      await direct.leaseClient.leaseRevoke({ ID: lease });
    }
  });

  test("a key of this node's from before a restart with another --advertise: its own TLS address is never named as the leader's", async () => {
    const prefix = freshPrefix();
    const { ID: lease } = await direct.leaseClient.leaseGrant({ TTL: 30 });
    // The plain port moved; the TLS port did not.
    await direct.put(`${prefix}leader`).value(JSON.stringify({ nodeId: 'c', advertise: '127.0.0.1:6998', advertiseTls: '127.0.0.1:8998' })).lease(lease);
    try {
      const c = await startNode(prefix, 'c', { advertiseTls: '127.0.0.1:8998' });
      await waitFor(() => c.leadership.leaderAddress() !== null, 'c to read the key');
      assert.equal(c.leadership.leaderAddress(), '127.0.0.1:6998');
      assert.equal(c.leadership.leaderTlsAddress(), null, 'not its own TLS port: clients would come straight back');
    } finally {
      await direct.leaseClient.leaseRevoke({ ID: lease });
    }
  });

  test('two members with the same node id: the follower still sends clients to the leader, and says what is wrong', async () => {
    const prefix = freshPrefix();
    const { log, messages } = captureLog('error');
    const a = await startNode(prefix, 'same', { log, ttl: 1 });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    let polls = 0;
    const b = await startNode(prefix, 'same', {
      log,
      ttl: 1,
      beforeStart: (client) => {
        const get = client.get.bind(client);
        client.get = (key: string) => {
          polls++;
          return get(key);
        };
      },
    });
    await waitFor(() => b.leadership.leaderAddress() !== null, 'the follower to know the leader');
    assert.equal(b.leadership.leaderAddress(), a.leadership.leaderAddress());
    const seen = polls;
    await waitFor(() => polls >= seen + 3, 'three more polls of the leader key');
    assert.deepEqual(messages(), ['another member uses this node id and leads: give each member its own --node-id'], 'once per term');
  });

  test('etcd answering reads but refusing writes is one outage in the log, not one per poll', async () => {
    const prefix = freshPrefix();
    const { log, messages } = captureLog();
    let refused = 0;
    const node = await startNode(prefix, 'full', {
      ttl: 1,
      log,
      // What etcd does when its space quota is reached: reads work, lease grants fail.
      beforeStart: (client) => {
        (client.leaseClient as { leaseGrant: unknown }).leaseGrant = () => {
          refused++;
          return Promise.reject(new Error('etcdserver: mvcc: database space exceeded'));
        };
      },
    });
    await waitFor(() => refused >= 4, 'four campaigns to be refused');
    assert.deepEqual(messages().filter((m) => m.startsWith('etcd ')), ['etcd is failing']);
    assert.match(node.leadership.etcdProblem ?? '', /^campaigning for leadership: .*space exceeded/);
    // Another member leads: this one campaigns no more, so what failed its campaigns is over.
    const other = await startNode(prefix, 'other', { ttl: 1 });
    await waitFor(() => other.leadership.canServe(), 'the other member to lead');
    await waitFor(() => node.leadership.etcdProblem === null, 'the problem to clear');
    assert.deepEqual(messages().filter((m) => m.startsWith('etcd ')), ['etcd is failing', 'etcd answers again']);
  });

  test('a renewal keeps the leader serving for the TTL minus the margin, max(500 ms, TTL/4), never the whole TTL', async () => {
    for (const [ttl, windowMs] of [
      [2, 1500],
      [4, 3000],
    ] as const) {
      const node = await startNode(freshPrefix(), `margin-${ttl}`, { ttl });
      await waitFor(() => node.leadership.canServe(), 'it to lead');
      // Several renewals go by; right after each, the time left is at its largest.
      let most = 0;
      const until = performance.now() + windowMs;
      while (performance.now() < until) {
        most = Math.max(most, node.leadership.leaseRemainingMs());
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.ok(most <= windowMs, `--lease-ttl=${ttl}: ${most} ms left after a renewal, more than ${windowMs}`);
      // Renewals go out three times per window: right after one, the window less a round trip is left.
      assert.ok(most > windowMs - 300, `--lease-ttl=${ttl}: at most ${most} ms left, expected close to ${windowMs}`);
      await node.leadership.close();
    }
  });

  test('resign hands leadership over within a fraction of a second', async (t) => {
    const prefix = freshPrefix();
    const a = await startNode(prefix, 'a');
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const b = await startNode(prefix, 'b');
    await waitFor(() => b.leadership.leaderAddress() === a.leadership.leaderAddress(), 'b to learn the leader');

    const t0 = performance.now();
    const resigned = a.leadership.resign();
    assert.equal(a.leadership.canServe(), false, 'a stops serving before anything else happens');
    await waitFor(() => b.leadership.canServe(), 'b to take over', 2000);
    const handoverMs = performance.now() - t0;
    await resigned;
    assert.ok(handoverMs < 1000, `handover took ${handoverMs.toFixed(0)} ms`);
    t.diagnostic(`resign handover: ${handoverMs.toFixed(1)} ms`);
    assert.deepEqual(a.lost, ['resigned']);
    await waitFor(() => a.leadership.leaderAddress() === b.leadership.leaderAddress(), 'a to learn the new leader');
    assert.equal(a.leadership.role, 'follower');
  });

  test('resign revokes the lease before anything else, so the successor does not find the old lease alive and wait it out', async () => {
    const prefix = freshPrefix();
    const REVOKE_DELAY_MS = 300;
    const a = await startNode(prefix, 'a', {
      beforeStart: (client) => {
        // A revoke that takes a while, as over a slow link: were the key deleted first,
        // the successor would find it gone and the lease alive, and wait a whole TTL.
        const leases = client.leaseClient;
        const revoke = leases.leaseRevoke.bind(leases);
        leases.leaseRevoke = (...args) => new Promise((r) => setTimeout(r, REVOKE_DELAY_MS)).then(() => revoke(...args));
      },
    });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const b = await startNode(prefix, 'b');
    await waitFor(() => b.leadership.leaderNodeId() === 'a', 'b to know a leads');
    const t0 = performance.now();
    await a.leadership.resign();
    await waitFor(() => b.leadership.canServe(), 'b to take over', 5000);
    const handoverMs = performance.now() - t0;
    assert.ok(handoverMs < 1000, `handover took ${handoverMs.toFixed(0)} ms, not a revoke's ${REVOKE_DELAY_MS} ms and a campaign`);
  });

  test('a deposed leader cannot write: its store rejects with FencedError once another node leads', async () => {
    const prefix = freshPrefix();
    const { oldStore, newStore } = await handOver(prefix);
    await newStore.persist(new Map([['s', 200n]]));

    await assert.rejects(oldStore.persist(new Map([['s', 150n]])), (err: Error & { code?: string }) => {
      assert.equal(err.name, 'FencedError');
      assert.equal(err.code, 'FENCED');
      return true;
    });
    assert.equal(await direct.get(`${prefix}marks/s`).string(), '200');
  });

  test('a leader cut off from etcd stops serving by itself before its lease can expire in etcd', async (t) => {
    const prefix = freshPrefix();
    const proxy = await proxiedEtcd();
    const ttl = 2;
    const a = await startNode(prefix, 'a', { endpoints: [proxy.url], ttl });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const b = await startNode(prefix, 'b', { ttl });
    await waitFor(() => b.leadership.leaderAddress() === a.leadership.leaderAddress(), 'b to learn the leader');
    const term = a.leadership.term!;

    const cut = performance.now();
    proxy.blackhole(true);
    await waitFor(() => !a.leadership.canServe(), 'a to stop serving', ttl * 1000 + 500);
    const stoppedAfter = performance.now() - cut;

    // At this moment etcd still holds a's key: nobody else can have been elected.
    const kv = (await direct.get(`${prefix}leader`).exec()).kvs[0];
    assert.ok(kv !== undefined, 'the leader key still exists in etcd when a stops serving');
    assert.equal(kv.create_revision, term.revision);
    assert.equal(b.leadership.role === 'leader', false);
    assert.ok(stoppedAfter < ttl * 1000, `a stopped ${stoppedAfter.toFixed(0)} ms after the cut, within the TTL`);
    await waitFor(() => a.lost.length === 1, "a's lost event");
    assert.match(a.lost[0]!, /not renewed in time/);

    await waitFor(() => b.leadership.canServe(), 'b to take over once the lease expired in etcd', ttl * 1000 + 3000);
    const takeoverAfter = performance.now() - cut;
    assert.ok(takeoverAfter > stoppedAfter);
    t.diagnostic(`cut-off leader stopped after ${stoppedAfter.toFixed(0)} ms; follower took over after ${takeoverAfter.toFixed(0)} ms`);

    proxy.blackhole(false);
    await waitFor(
      () => a.leadership.leaderAddress() === b.leadership.leaderAddress() && a.leadership.role === 'follower',
      'a to rejoin as a follower',
      10_000,
    );
    // Neither its failed reads nor the renewals of the term it lost are reported any more.
    await waitFor(() => a.leadership.etcdProblem === null, "a's etcd problem to clear", 5000);
  });

  test('a leader whose renewals fail steps down, and once etcd answers again it reports no problem', async () => {
    const prefix = freshPrefix();
    const proxy = await proxiedEtcd();
    const { log, messages } = captureLog();
    const a = await startNode(prefix, 'a', { endpoints: [proxy.url], ttl: 2, log });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const b = await startNode(prefix, 'b', { ttl: 2 });
    // Refused rather than blackholed: the renewals fail while a still leads.
    proxy.refuse(true);
    await waitFor(() => a.leadership.etcdProblem?.startsWith('renewing the lease') === true, 'a renewal to fail');
    await waitFor(() => a.lost.length === 1, 'a to step down');
    await waitFor(() => b.leadership.canServe(), 'b to take over', 10_000);
    // Stepping down proves nothing about etcd: it must not be reported as answering again.
    assert.equal(messages().includes('etcd answers again'), false, messages().join(' / '));
    proxy.refuse(false);
    await waitFor(() => a.leadership.role === 'follower' && a.leadership.leaderAddress() === b.leadership.leaderAddress(), 'a to follow b', 10_000);
    // A follower renews nothing: the failures of the term it lost say nothing about etcd now.
    await waitFor(() => a.leadership.etcdProblem === null, "a's etcd problem to clear", 5000);
  });

  test('a leader whose key is deleted in etcd steps down, and a node leads again', async () => {
    const prefix = freshPrefix();
    const a = await startNode(prefix, 'a');
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const b = await startNode(prefix, 'b');
    // An operator deleting the key: the leader must step down, and someone must lead again.
    await direct.delete().key(`${prefix}leader`);
    await waitFor(() => a.lost.length === 1, 'a to notice its key is gone');
    assert.equal(a.lost[0], 'the leader key was deleted in etcd');
    await waitFor(() => a.leadership.canServe() !== b.leadership.canServe(), 'a new leader', 5000);
  });

  test('a key deleted by hand while its leader cannot see that: the successor revokes its lease and never serves beside it', async () => {
    const prefix = freshPrefix();
    // a's watch and polls go through a proxy the test cuts; its renewals go straight to etcd.
    const { proxy, a, b } = await leaderBehindProxy(prefix, 'clientEndpoints');
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    assert.equal(await overlapsUntilServing(a, b), 0, 'a and b never served at the same moment');
    assert.deepEqual(a.lost, ['etcd reports that our lease has expired']);
    proxy.blackhole(false);
  });

  test('a key deleted by hand while its cut-off leader still serves on a lease etcd shows at 0 s left: the successor still waits', async () => {
    const prefix = freshPrefix();
    // a is wholly behind the proxy: the cut stops its renewals, watch and polls alike.
    const { proxy, a, b } = await leaderBehindProxy(prefix, 'endpoints');
    const lease = a.leadership.term!.leaseId;
    proxy.blackhole(true);
    // etcd rounds the time left down: its last second reads 0, while a may serve for half of it.
    await waitFor(async () => Number((await direct.leaseClient.leaseTimeToLive({ ID: lease })).TTL) === 0, 'etcd to show 0 s left', 4000);
    await direct.delete().key(`${prefix}leader`);
    assert.equal(await overlapsUntilServing(a, b), 0, 'a and b never served at the same moment');
    proxy.blackhole(false);
  });

  /** Whether a transaction is a campaign: create the leader key if it is absent. */
  function isCampaign(req: { compare?: Array<{ target?: unknown; create_revision?: unknown }> | null }): boolean {
    return req.compare?.some((c) => c.target === CompareTarget.Create && String(c.create_revision) === '0') ?? false;
  }

  /** The leases the record of winners holds now (winners.ts). */
  async function onRecord(prefix: string): Promise<string[]> {
    const under = winnersPrefix(prefix);
    return Object.keys(await direct.getAll().prefix(under).strings()).map((k) => k.slice(under.length)).sort();
  }

  /**
   * Node a leads, wholly behind a proxy (once cut, nothing tells it that its lease was
   * revoked); b wins when a's key is deleted, revokes a's lease, and is stopped cleanly
   * while it waits: its key goes, its lease stays. Then d, which saw neither key, starts
   * (its etcd client as `beforeStart` leaves it) and must never serve beside a.
   * TTL 5: a serves for 3.75 s after its last renewal, long enough for b's campaign, and
   * d's campaigns, on a loaded machine.
   */
  async function nextAfterSuccessorStoppedWhileWaiting(prefix: string, beforeStart?: (client: Etcd3) => void): Promise<void> {
    const TTL = 5;
    const { proxy, a } = await leaderAlone(prefix, 'endpoints', TTL);
    const b = await startNode(prefix, 'b', { ttl: TTL });
    await waitFor(() => b.leadership.leaderNodeId() === 'a', 'b to know a leads');
    b.leadership.once('elected', () => void b.leadership.resign());
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    await waitFor(() => b.lost.length > 0, 'b to win and resign');
    assert.equal(a.leadership.canServe(), true, 'a still serves on its last renewal');
    // a's lease is revoked by now; only b's, kept, stands for a.
    const d = await startNode(prefix, 'd', { ttl: TTL, ...(beforeStart ? { beforeStart } : {}) });
    assert.equal(await overlapsUntilServing(a, d, 20_000), 0, 'a and d never served at the same moment');
    proxy.blackhole(false);
  }

  test("a member that never saw the deleted key finds the old leader's lease on record, revokes it and waits", async () => {
    const prefix = freshPrefix();
    // a's watch and polls go through a proxy the test cuts; its renewals go straight to etcd.
    const { proxy, a } = await leaderAlone(prefix, 'clientEndpoints');
    assert.deepEqual(await onRecord(prefix), [a.leadership.term!.leaseId]);
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    // b starts after the deletion: no leader key to learn a's lease from.
    const b = await startNode(prefix, 'b', { ttl: 2 });
    assert.equal(await overlapsUntilServing(a, b), 0, 'a and b never served at the same moment');
    assert.deepEqual(a.lost, ['etcd reports that our lease has expired'], "b's revoke stopped a");
    await waitFor(async () => (await onRecord(prefix)).join() === b.leadership.term!.leaseId, "a's entry to go once revoked");
    proxy.blackhole(false);
  });

  test('a lease check answered from an older raft term proves nothing: a lease such a member calls gone is checked again', async () => {
    const prefix = freshPrefix();
    const { proxy, a } = await leaderAlone(prefix, 'clientEndpoints');
    const aLease = a.leadership.term!.leaseId;
    let stale = 0;
    const b = await startNode(prefix, 'b', {
      ttl: 2,
      beforeStart: (client) => {
        const leases = client.leaseClient;
        const timeToLive = leases.leaseTimeToLive.bind(leases);
        // The first check of a's lease is answered as a deposed etcd leader would, from the term
        // before, by a lessor that does not know the lease: gone.
        leases.leaseTimeToLive = async (req, ...rest) => {
          const res = await timeToLive(req, ...rest);
          if (req.ID !== aLease || stale++ > 0) return res;
          return { ...res, TTL: '-1', grantedTTL: '0', header: { ...res.header, raft_term: String(BigInt(res.header.raft_term) - 1n) } };
        };
      },
    });
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    assert.equal(await overlapsUntilServing(a, b), 0, 'a and b never served at the same moment');
    assert.ok(stale >= 2, 'the stale answer was given, then a current one');
    assert.deepEqual(a.lost, ['etcd reports that our lease has expired'], "b's revoke stopped a");
    proxy.blackhole(false);
  });

  test('a member that never saw the key of a successor stopped while it waited out a cut-off leader still waits', async () => {
    await nextAfterSuccessorStoppedWhileWaiting(freshPrefix());
  });

  test('a campaign that won and then failed does not hide a successor that was waiting: the next campaign still waits', async () => {
    let checks = 0;
    let grants = 0;
    await nextAfterSuccessorStoppedWhileWaiting(freshPrefix(), (client) => {
      const leases = client.leaseClient;
      const timeToLive = leases.leaseTimeToLive.bind(leases);
      const grant = leases.leaseGrant.bind(leases);
      // d's first campaign wins, then fails reading a lease's time to live, and revokes its own lease.
      leases.leaseTimeToLive = (...args) => (checks++ === 0 ? Promise.reject(new Error('injected: the check fails')) : timeToLive(...args));
      leases.leaseGrant = (...args) => {
        grants++;
        return grant(...args);
      };
    });
    assert.ok(grants >= 2, 'd campaigned again');
  });

  test('a campaign transaction that is applied twice (a retry after a lost answer) still finds a successor that was waiting', async () => {
    let campaigns = 0;
    await nextAfterSuccessorStoppedWhileWaiting(freshPrefix(), (client) => {
      const kv = client.kv;
      const txn = kv.txn.bind(kv);
      // What a retry does when the first attempt's answer is lost: the second finds the key taken, by d.
      kv.txn = async (req, ...rest) => {
        if (isCampaign(req) && campaigns++ === 0) await txn(req, ...rest);
        return txn(req, ...rest);
      };
    });
    assert.ok(campaigns >= 1, 'the first campaign transaction was applied twice');
  });

  test('a member that never saw the deleted key, after a winner whose campaign failed, still finds the old leader on record', async () => {
    const prefix = freshPrefix();
    // TTL 5: a serves for 3.75 s after its last renewal, long enough for b's failed campaign on a loaded machine.
    const { proxy, a } = await leaderAlone(prefix, 'endpoints', 5);
    const aLease = a.leadership.term!.leaseId;
    let grants = 0;
    let ownRevoked = false;
    const b = await startNode(prefix, 'b', {
      ttl: 5,
      beforeStart: (client) => {
        const leases = client.leaseClient;
        const grant = leases.leaseGrant.bind(leases);
        const revoke = leases.leaseRevoke.bind(leases);
        // b wins once, and its campaign fails before it could check a's lease; its later campaigns never get a lease.
        leases.leaseGrant = (...args) => (grants++ === 0 ? grant(...args) : new Promise<never>(() => {}));
        leases.leaseTimeToLive = () => Promise.reject(new Error("injected: reading a lease's time to live fails"));
        leases.leaseRevoke = (req, ...rest) =>
          revoke(req, ...rest).finally(() => {
            if (req.ID !== aLease) ownRevoked = true;
          });
      },
    });
    await waitFor(() => b.leadership.leaderNodeId() === 'a', 'b to know a leads');
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    await waitFor(() => ownRevoked, 'b to fail its campaign and revoke its own lease');
    // b revoked nobody on the strength of its lease: its entry goes with it, and a's stays.
    await waitFor(async () => (await onRecord(prefix)).join() === aLease, 'b to remove its entry from the record');
    assert.equal(a.leadership.canServe(), true, 'a still serves on its last renewal');
    const d = await startNode(prefix, 'd', { ttl: 5 });
    assert.equal(await overlapsUntilServing(a, d, 20_000), 0, 'a and d never served at the same moment');
    proxy.blackhole(false);
  });

  test('a leader that resigns removes its entry from the record of winners; one whose lease is gone is removed by the next winner', async () => {
    const prefix = freshPrefix();
    const a = await startNode(prefix, 'a');
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    await a.leadership.resign();
    // Nobody else runs: a removed its own entry.
    await waitFor(async () => (await onRecord(prefix)).length === 0, 'a to remove its entry');
    await a.leadership.close();
    const b = await startNode(prefix, 'b');
    await waitFor(() => b.leadership.canServe(), 'b to lead');
    const bLease = b.leadership.term!.leaseId;
    // Gone without b's help (as after a crash; the revoke takes the key with it): b cannot remove its entry.
    // Stopped as it notices, b does not campaign again (which would remove it).
    b.leadership.once('lost', () => void b.leadership.close());
    await direct.leaseClient.leaseRevoke({ ID: bLease });
    await waitFor(() => b.lost.length > 0, 'b to notice its lease is gone');
    assert.deepEqual(await onRecord(prefix), [bLease]);
    const c = await startNode(prefix, 'c');
    await waitFor(() => c.leadership.canServe(), 'c to lead');
    await waitFor(async () => (await onRecord(prefix)).join() === c.leadership.term!.leaseId, 'c to remove b from the record');
  });

  test('a campaign that revoked nobody and fails its last proof revokes its own lease, so a campaign can win at once, not a TTL later', async () => {
    const prefix = freshPrefix();
    let grants = 0;
    let failing = true;
    const revoked: string[] = [];
    const a = await startNode(prefix, 'a', {
      ttl: 5,
      beforeStart: (client) => {
        const leases = client.leaseClient;
        const grant = leases.leaseGrant.bind(leases);
        const revoke = leases.leaseRevoke.bind(leases);
        // The first campaign is slow enough (past a renewal interval, 1.25 s at a TTL of 5) to prove its lease again.
        leases.leaseGrant = async (...args) => {
          if (grants++ === 0) await new Promise((r) => setTimeout(r, 1500));
          else failing = false;
          return grant(...args);
        };
        leases.leaseRevoke = (req, ...rest) => {
          revoked.push(String(req.ID));
          return revoke(req, ...rest);
        };
      },
      keepaliveClient: renewalsThrough((keepAlive) => {
        return ((...args: Parameters<typeof keepAlive>) =>
          failing ? Promise.reject(new Error('injected: the renewal fails')) : keepAlive(...args)) as LeaseKeepAlive;
      }),
    });
    // Well before the first lease (TTL 5) could expire and take the key with it.
    await waitFor(() => a.leadership.canServe(), 'a to lead', 4000);
    assert.equal(revoked.length, 1, 'the first lease was revoked');
    assert.deepEqual(await onRecord(prefix), [a.leadership.term!.leaseId]);
  });

  test('a campaign whose check of one lease fails still removes the leases it found gone from the record', async () => {
    const prefix = freshPrefix();
    const POISON = '999999';
    const dead = Array.from({ length: 50 }, (_, i) => String(1_000_000 + i));
    for (const lease of [...dead, POISON]) await direct.put(`${winnersPrefix(prefix)}${lease}`).value('{}');
    let poisoned = true;
    const a = await startNode(prefix, 'a', {
      beforeStart: (client) => {
        const leases = client.leaseClient;
        const timeToLive = leases.leaseTimeToLive.bind(leases);
        leases.leaseTimeToLive = (req, ...rest) =>
          poisoned && req.ID === POISON ? Promise.reject(new Error('injected: this check fails')) : timeToLive(req, ...rest);
      },
    });
    // Every campaign fails on the one lease; what it found gone goes, and so does its own entry.
    await waitFor(async () => (await onRecord(prefix)).join() === POISON, 'the record to shrink to the lease that cannot be checked');
    assert.equal(a.leadership.canServe(), false);
    poisoned = false;
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    await waitFor(async () => (await onRecord(prefix)).join() === a.leadership.term!.leaseId, 'a alone on record');
  });

  test('a record of thousands of winners whose leases are gone is checked a few at a time, and cleared by the next winner', async () => {
    const prefix = freshPrefix();
    // Campaigns that won and then failed while etcd flapped, each unable to remove its own entry.
    const ENTRIES = 3000;
    for (let i = 0; i < ENTRIES; i += 100) {
      const success = Array.from({ length: 100 }, (_, j) => ({
        request_put: { key: Buffer.from(`${winnersPrefix(prefix)}${1_000_000 + i + j}`), value: Buffer.from('{}') },
      }));
      await direct.kv.txn({ compare: [], success, failure: [] });
    }
    const log = captureLog('warn');
    const a = await startNode(prefix, 'a', { log: log.log });
    await waitFor(() => a.leadership.canServe(), 'a to lead', 20_000);
    await waitFor(async () => (await onRecord(prefix)).join() === a.leadership.term!.leaseId, 'a to clear the record', 20_000);
    assert.ok(log.messages().some((m) => m.startsWith('the record of winners in etcd is large')), log.messages().join('\n'));
  });

  test('a successor stopped while it waits out a cut-off leader leaves its lease to expire, so the next one waits too', async () => {
    const prefix = freshPrefix();
    const { proxy, a } = await leaderAlone(prefix, 'endpoints');
    const b = await startNode(prefix, 'b', { ttl: 2 });
    const c = await startNode(prefix, 'c', { ttl: 2 });
    await waitFor(() => b.leadership.leaderNodeId() === 'a' && c.leadership.leaderNodeId() === 'a', 'b and c to know a leads');
    let resigned: Node | null = null;
    for (const n of [b, c]) {
      n.leadership.once('elected', () => {
        if (resigned !== null) return;
        resigned = n;
        // Stopped cleanly (an upgrade, say) while it waits.
        void n.leadership.resign();
      });
    }
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    await waitFor(() => resigned !== null && resigned.lost.length > 0, 'the first successor to resign');
    const next = resigned === b ? c : b;
    assert.equal(await overlapsUntilServing(a, next), 0, 'a and the next leader never served at the same moment');
    proxy.blackhole(false);
  });

  test('a successor whose own key is deleted while it waits out a cut-off leader, and that wins again, still waits', async () => {
    const prefix = freshPrefix();
    // TTL 5: b must find a's lease alive, whose last renewal came at most 1.25 s before the cut.
    const { proxy, a, b } = await leaderBehindProxy(prefix, 'endpoints', 5);
    let elected = 0;
    b.leadership.on('elected', () => elected++);
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    await waitFor(() => elected === 1, 'b to win, and wait out a');
    assert.ok(b.leadership.fenceRemainingMs() > 0, 'b waits');
    // Deleted again before the wait is over: b steps down, and is the only one left to campaign.
    await direct.delete().key(`${prefix}leader`);
    await waitFor(() => elected === 2, 'b to win again');
    assert.deepEqual(b.lost, ['the leader key was deleted in etcd']);
    assert.equal(await overlapsUntilServing(a, b, 20_000), 0, 'a and b never served at the same moment');
    proxy.blackhole(false);
  });

  test('a successor whose revoke of the old lease lands but never answers leaves its own key to expire: nobody serves beside the old leader', async () => {
    const prefix = freshPrefix();
    // TTL 5: the old leader's serving window, 3.75 s, outlasts the 2 s an etcd call may take.
    const TTL = 5;
    const { proxy, a } = await leaderAlone(prefix, 'endpoints', TTL);
    const aLease = a.leadership.term!.leaseId;
    let revokes = 0;
    const b = await startNode(prefix, 'b', {
      ttl: TTL,
      beforeStart: (client) => {
        const leases = client.leaseClient;
        const revoke = leases.leaseRevoke.bind(leases);
        // etcd applies the first revoke of a's lease, but its answer never comes.
        leases.leaseRevoke = (req, ...rest) =>
          req.ID === aLease && revokes++ === 0 ? revoke(req, ...rest).then(() => new Promise<never>(() => {})) : revoke(req, ...rest);
      },
    });
    await waitFor(() => b.leadership.leaderNodeId() === 'a', 'b to know a leads');
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    assert.equal(await overlapsUntilServing(a, b, 25_000), 0, 'a and b never served at the same moment');
    assert.equal(revokes, 1, 'the revoke was sent once');
    proxy.blackhole(false);
  });

  /**
   * Node b, whose grant of a lease takes GRANT_DELAY_MS (so its lease is proven too
   * long ago by the time it could revoke, and must be proven afresh), with its etcd
   * calls wrapped as `wrap` says; `events` records grants, proofs sent and revokes
   * in the order they happen. Node a leads with its watch and polls cut off, its
   * renewals going straight to etcd, so a revoke of its lease reaches it.
   */
  async function successorOfCutOffLeader(
    prefix: string,
    /** Stands in for each renewal; `events` is the list the helper returns, to record into and read. */
    renewal: (leaseKeepAlive: () => Promise<unknown>, events: string[]) => Promise<unknown>,
  ): Promise<{ proxy: TcpProxy; a: Node; b: Node; events: string[]; log: ReturnType<typeof captureLog> }> {
    const GRANT_DELAY_MS = 300;
    const { proxy, a } = await leaderAlone(prefix, 'clientEndpoints');
    const aLease = a.leadership.term!.leaseId;
    const events: string[] = [];
    const log = captureLog('warn');
    const b = await startNode(prefix, 'b', {
      ttl: 2,
      log: log.log,
      beforeStart: (client) => {
        const leases = client.leaseClient;
        const grant = leases.leaseGrant.bind(leases);
        const revoke = leases.leaseRevoke.bind(leases);
        leases.leaseGrant = async (...args) => {
          events.push('grant');
          await new Promise((r) => setTimeout(r, GRANT_DELAY_MS));
          return grant(...args);
        };
        leases.leaseRevoke = (req, ...rest) => {
          events.push(req.ID === aLease ? "revoke a's lease" : 'revoke another lease');
          return revoke(req, ...rest);
        };
      },
      keepaliveClient: renewalsThrough((keepAlive) => {
        // The cluster here has one member, so one call per renewal.
        return ((...args: Parameters<typeof keepAlive>) => renewal(() => keepAlive(...args), events)) as LeaseKeepAlive;
      }),
    });
    await waitFor(() => b.leadership.leaderNodeId() === 'a', 'b to know a leads');
    return { proxy, a, b, events, log };
  }

  test("a successor whose own lease etcd renews slowly proves it three times, then revokes the old leader's lease all the same, and says so", async () => {
    const prefix = freshPrefix();
    // Past half the margin (250 ms at a TTL of 2 s), each proof proves too little.
    const ANSWER_DELAY_MS = 300;
    const { proxy, a, b, events, log } = await successorOfCutOffLeader(prefix, async (keepAlive, events) => {
      events.push('renewal');
      const stream = (await keepAlive()) as { emit: (event: string | symbol, ...rest: unknown[]) => boolean };
      const emit = stream.emit.bind(stream);
      stream.emit = (event, ...rest) => {
        if (event !== 'data') return emit(event, ...rest);
        setTimeout(() => emit(event, ...rest), ANSWER_DELAY_MS);
        return true;
      };
      return stream;
    });
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    assert.equal(await overlapsUntilServing(a, b), 0, 'a and b never served at the same moment');
    assert.deepEqual(events.slice(0, 5), ['grant', 'renewal', 'renewal', 'renewal', "revoke a's lease"], 'three proofs, then the revoke');
    assert.deepEqual(a.lost, ['etcd reports that our lease has expired'], 'the revoke stopped a');
    assert.equal(log.messages().filter((m) => m.startsWith('etcd answers lease renewals slowly')).length, 1, log.messages().join('\n'));
    proxy.blackhole(false);
  });

  test("a successor whose proof of its own lease fails still revokes the old leader's lease first, and leaves its own to expire", async () => {
    const prefix = freshPrefix();
    let failing = true;
    const { proxy, a, b, events } = await successorOfCutOffLeader(prefix, async (keepAlive, events) => {
      // The campaign after the failed one proves its lease as usual.
      if (events.filter((e) => e === 'grant').length > 1) failing = false;
      if (!failing) return keepAlive();
      events.push('failed proof');
      throw new Error('injected: the renewal fails');
    });
    proxy.blackhole(true);
    await direct.delete().key(`${prefix}leader`);
    assert.equal(await overlapsUntilServing(a, b), 0, 'a and b never served at the same moment');
    // b's own lease is not revoked after the failed proof: the next campaign comes only once its key expired.
    assert.deepEqual(events.slice(0, 4), ['grant', 'failed proof', "revoke a's lease", 'grant']);
    assert.deepEqual(a.lost, ['etcd reports that our lease has expired'], 'the revoke stopped a');
    proxy.blackhole(false);
  });

  test('a term counts from when the campaign was sent: an answer that takes 400 ms leaves 400 ms less to serve', async () => {
    const prefix = freshPrefix();
    // Renewals cannot get through, so the campaign alone proves the lease.
    const cut = await proxiedEtcd();
    cut.blackhole(true);
    const DELAY_MS = 400;
    const node = await startNode(prefix, 'slow-campaign', {
      endpoints: [cut.url],
      clientEndpoints: cluster.endpoints,
      ttl: 2,
      beforeStart: (client) => {
        const kv = client.kv;
        const txn = kv.txn.bind(kv);
        // The campaign (create the key if absent) answers late, as over a slow link.
        kv.txn = (req, ...rest) => {
          return isCampaign(req) ? new Promise((r) => setTimeout(r, DELAY_MS)).then(() => txn(req, ...rest)) : txn(req, ...rest);
        };
      },
    });
    let left = 0;
    await waitFor(() => {
      left = node.leadership.leaseRemainingMs();
      return left > 0;
    }, 'it to lead', 5000);
    // The serving window at TTL 2 is 1500 ms from the campaign's send time.
    assert.ok(left <= 1500 - DELAY_MS + 50, `${left} ms to serve right after a campaign answered ${DELAY_MS} ms late`);
    cut.blackhole(false);
  });

  test('a renewal that finds the lease gone stops the leader at once, though its watch and polls cannot reach etcd', async () => {
    const prefix = freshPrefix();
    // TTL 6: renewals every 1.5 s, and a serving window of 4.5 s that the test outwaits.
    const { proxy, a } = await leaderAlone(prefix, 'clientEndpoints', 6);
    proxy.blackhole(true);
    // The key goes with the lease, but a cannot see that; its renewals still reach etcd.
    await direct.leaseClient.leaseRevoke({ ID: a.leadership.term!.leaseId });
    const t0 = performance.now();
    await waitFor(() => a.lost.length === 1, 'a renewal to report the lease gone', 4000);
    assert.equal(a.lost[0], 'etcd reports that our lease has expired');
    assert.equal(a.leadership.canServe(), false);
    assert.ok(performance.now() - t0 < 3000, 'within a renewal interval or two, not at the serving deadline');
    proxy.blackhole(false);
  });

  test('a renewal answered from a raft term older than one already seen proves nothing: the leader stops at its deadline', async () => {
    const prefix = freshPrefix();
    let renewals = 0;
    let behind = false;
    const a = await startNode(prefix, 'a', {
      ttl: 2,
      keepaliveClient: renewalsThrough((keepAlive) => {
        // Once `behind`, the member answers as a deposed etcd leader that still renews
        // in its own lessor would (etcd-io/etcd#15247): from the term before.
        return async (...args) => {
          const stream = await keepAlive(...args);
          const events = stream as unknown as { emit: (event: string | symbol, ...rest: unknown[]) => boolean };
          const emit = events.emit.bind(stream);
          events.emit = (event, ...rest) => {
            if (event === 'data') {
              const res = rest[0] as { header: { raft_term: string } };
              if (behind) rest[0] = { ...res, header: { ...res.header, raft_term: String(BigInt(res.header.raft_term) - 1n) } };
              else renewals++;
            }
            return emit(event, ...rest);
          };
          return stream;
        };
      }),
    });
    await waitFor(() => a.leadership.canServe() && renewals > 0, 'a to lead and renew once from the current term');
    behind = true;
    await waitFor(() => a.lost.length === 1, 'a to stop serving', 4000);
    assert.match(a.lost[0]!, /^the lease was not renewed in time/);
  });

  test('close resigns: the key is gone and the lease revoked', async () => {
    const prefix = freshPrefix();
    const a = await startNode(prefix, 'a');
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const leaseId = a.leadership.term!.leaseId;
    await a.leadership.close();
    assert.equal(a.leadership.canServe(), false);
    assert.equal(await direct.get(`${prefix}leader`).string(), null);
    const ttl = await direct.leaseClient.leaseTimeToLive({ ID: leaseId });
    assert.equal(Number(ttl.TTL), -1, 'the lease no longer exists');
  });

  // The two guards of group mode, each on its own: the serving deadline is read from
  // the clock for every stretch of requests, not only by a timer; the write is fenced
  // on the leader key, not only on the store's own last write.
  test('canServe turns false the moment the serving deadline passes, even before any timer runs', async () => {
    const prefix = freshPrefix();
    const a = await startNode(prefix, 'a');
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    // Block the event loop (as a GC pause or SIGSTOP would) past the whole TTL: no timer can fire.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2500);
    assert.equal(a.leadership.canServe(), false);
    // Nor does it name itself to clients: that would send them round in a loop.
    assert.equal(a.leadership.leaderAddress(), null);
    assert.equal(a.leadership.leaderTlsAddress(), null);
  });

  test("canServe's answer lasts for one synchronous stretch only: the next reads the clock again", async () => {
    const prefix = freshPrefix();
    const a = await startNode(prefix, 'a');
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const realNow = performance.now.bind(performance);
    assert.equal(a.leadership.canServe(), true, 'read the clock for this stretch');
    // The clock jumps an hour ahead, far past the deadline, within the same stretch.
    performance.now = () => realNow() + 3_600_000;
    try {
      assert.equal(a.leadership.canServe(), true, 'the same stretch keeps the answer it was given');
      await Promise.resolve();
      assert.equal(a.leadership.canServe(), false, 'a later stretch reads the clock and sees the deadline passed');
    } finally {
      performance.now = realNow;
    }
  });

  test('a wall clock jumping past the deadline while the monotonic clock stands still (a suspended machine) stops serving', async () => {
    const prefix = freshPrefix();
    let wallAhead = 0;
    const a = await startNode(prefix, 'a', { wallClock: () => Date.now() + wallAhead });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const term = a.leadership.term;
    // Back from a suspend: the monotonic clock has not moved, the wall clock has, by more than the TTL.
    wallAhead = 2 * 2000;
    await Promise.resolve();
    assert.equal(a.leadership.canServe(), false, 'the wall clock alone says the lease may have expired');
    assert.equal(a.leadership.leaderAddress(), null);
    assert.equal(a.leadership.leaderTlsAddress(), null);
    assert.equal(a.leadership.leaseRemainingMs(), 0);
    // Here the lease did live on in etcd, as after a clock set forward: the next keepalive proves it
    // again on both clocks, and the same term serves on with no election.
    await waitFor(() => a.leadership.canServe(), 'a to serve again after a keepalive');
    assert.equal(a.leadership.term, term);
    assert.deepEqual(a.lost, []);
  });

  test('the wall-clock deadline counts from when a renewal was sent, not from when its answer came', async () => {
    const prefix = freshPrefix();
    const proxy = await proxiedEtcd();
    let wallAhead = 0;
    let renewals = 0;
    // A long lease: renewals go out every 7.5 s, so none is sent in the moments this test watches.
    const a = await startNode(prefix, 'a', {
      endpoints: [proxy.url],
      ttl: 30,
      wallClock: () => Date.now() + wallAhead,
      keepaliveClient: renewalsThrough((keepAlive) => {
        return (...args) => {
          renewals++;
          return keepAlive(...args);
        };
      }),
    });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const campaignRenewals = renewals;
    // Hold the first renewal on its way, so that it is answered only after the wall clock jumps.
    proxy.blackhole(true);
    // Its send time is taken before the call: from here on it is a renewal sent before the jump.
    await waitFor(() => renewals > campaignRenewals, 'the first renewal of the term to be sent (7.5 s after the campaign)', 10_000);
    wallAhead = 60_000; // past that renewal's send time + 22.5 s, not past its answer time + 22.5 s
    proxy.blackhole(false);
    const until = performance.now() + 1500;
    while (performance.now() < until) {
      assert.equal(a.leadership.canServe(), false, 'a renewal sent before the jump proves nothing past its send time + TTL');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(a.lost, []);
  });

  test('the monotonic deadline counts from when a renewal was sent too: one answered a second late proves a second less', async () => {
    const prefix = freshPrefix();
    // TTL 6: renewals every 1.5 s, each proving 4.5 s from its send time.
    const HOLD_MS = 1000;
    let mode: 'pass' | 'hold' | 'drop' = 'pass';
    let heldAt = 0;
    let released = 0;
    let wallAhead = 0;
    const a = await startNode(prefix, 'a', {
      ttl: 6,
      wallClock: () => Date.now() + wallAhead,
      keepaliveClient: renewalsThrough((keepAlive) => {
        return async (...args) => {
          // The renewal's send time was taken just before this call.
          if (mode === 'hold') {
            if (heldAt === 0) {
              heldAt = performance.now();
              // Set back after that send time was read: the wall-clock deadline lies an hour
              // off, and the monotonic one alone decides.
              wallAhead = -3_600_000;
            } else if (performance.now() - heldAt > 100) {
              mode = 'drop';
            }
          }
          const how = mode;
          const stream = await keepAlive(...args);
          const events = stream as unknown as { emit: (event: string | symbol, ...rest: unknown[]) => boolean };
          const emit = events.emit.bind(stream);
          events.emit = (event, ...rest) => {
            if (event !== 'data' || how === 'pass') return emit(event, ...rest);
            // Held: answered a second late. Dropped: never answered (every later renewal).
            if (how === 'hold') setTimeout(() => (released++, emit(event, ...rest)), HOLD_MS);
            return true;
          };
          return stream;
        };
      }),
    });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    const term = a.leadership.term;
    mode = 'hold';
    await waitFor(() => heldAt > 0, 'the next renewal to be sent', 5000);
    // The renewal before it proved up to heldAt + 3 s; the held one, answered at heldAt + 1 s,
    // proves up to heldAt + 4.5 s (counted from its answer, it would be heldAt + 5.5 s).
    await waitFor(() => performance.now() >= heldAt + 3500, 'the deadline of the renewal before', 5000);
    assert.ok(released > 0, 'the held renewal was answered');
    assert.equal(a.leadership.canServe(), true, 'the held renewal extended the term past the one before it');
    await waitFor(() => performance.now() >= heldAt + 4700, 'its own deadline to pass', 5000);
    // etcd still answers everything but renewals, so a new term may follow at once: the one
    // that must have ended is this term.
    while (performance.now() < heldAt + 5300) {
      const served = a.leadership.canServe() && a.leadership.term === term;
      assert.equal(served, false, 'a renewal proves nothing past its send time + 4.5 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(a.lost[0] ?? '', /^the lease was not renewed in time/);
  });

  test('a wall clock set back leaves the monotonic deadline in charge', async () => {
    const prefix = freshPrefix();
    let wallAhead = 0;
    const a = await startNode(prefix, 'a', { wallClock: () => Date.now() + wallAhead });
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    wallAhead = -3_600_000;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2500);
    assert.equal(a.leadership.canServe(), false);
  });

  test('a deposed leader cannot write even before the new leader has written anything', async () => {
    const prefix = freshPrefix();
    const { oldStore } = await handOver(prefix);
    await assert.rejects(oldStore.persist(new Map([['s', 150n]])), { name: 'FencedError' });
    assert.equal(await direct.get(`${prefix}marks/s`).string(), '100');
  });
});

describe('etcd with authentication', () => {
  let cluster: EtcdCluster;
  const handles: GroupHandle[] = [];

  const config = (...credentials: string[]): Config =>
    parseConfig([`--etcd=${cluster.endpoints[0]}`, '--node-id=a', '--advertise=127.0.0.1:7501', '--lease-ttl=2', ...credentials]);

  before(async () => {
    cluster = await startEtcdCluster({ size: 1 });
    const admin = createEtcdClient(conn(cluster.endpoints));
    try {
      await admin.role('root').create();
      await admin.user('root').create('s3cret');
      await admin.user('root').addRole('root');
      await admin.auth.authEnable({});
    } finally {
      admin.close();
    }
  });

  after(async () => {
    for (const h of handles) await h.close();
    await cluster?.close();
  });

  test('a wrong password or a missing user stops start-up with a message that says what to pass', async () => {
    await assert.rejects(
      startGroup(config('--etcd-username=root', '--etcd-password=wrong'), silentLogger()),
      /etcd rejected the user name or password; check --etcd-username and --etcd-password/,
    );
    await assert.rejects(
      startGroup(config(), silentLogger()),
      /etcd requires a user; pass --etcd-username and --etcd-password/,
    );
  });

  test('the right credentials lead', async () => {
    const h = await startGroup(config('--etcd-username=root', '--etcd-password=s3cret'), silentLogger());
    handles.push(h);
    await waitFor(() => h.readiness().ready, 'the node to serve');
  });
});

describe('etcd replaced by an empty one (a restore or a rebuild: its revisions start over)', () => {
  let cluster: EtcdCluster;
  const nodes: EtcdLeadership[] = [];
  const clients: Etcd3[] = [];

  before(async () => {
    cluster = await startEtcdCluster({ size: 1 });
  });

  after(async () => {
    for (const n of nodes) await n.close();
    for (const c of clients) c.close();
    await cluster?.close();
  });

  test('the nodes follow the new history: one of them leads again', async () => {
    for (const id of ['a', 'b']) {
      const client = createEtcdClient(conn(cluster.endpoints));
      clients.push(client);
      const leadership = new EtcdLeadership({
        client,
        connection: conn(cluster.endpoints),
        prefix: '/restored/',
        nodeId: id,
        advertise: `127.0.0.1:75${id === 'a' ? '11' : '12'}`,
        leaseTtl: 1,
        log: silentLogger(),
      });
      nodes.push(leadership);
      await leadership.start();
    }
    await waitFor(() => nodes.some((n) => n.canServe()), 'a leader');
    // Revisions well past what the empty etcd will have for a while; a handover
    // after them shows both nodes the leader key at those revisions.
    for (let i = 0; i < 100; i++) await clients[0]!.put(`/elsewhere/${i}`).value('x');
    const [first, second] = nodes[0]!.canServe() ? [nodes[0]!, nodes[1]!] : [nodes[1]!, nodes[0]!];
    await first.resign();
    await waitFor(() => second.canServe() && first.leaderNodeId() === second.nodeId, 'the handover');
    await cluster.kill(0);
    cluster.wipe(0);
    await cluster.start(0);
    await waitFor(() => nodes.some((n) => n.canServe()), 'a leader in the new etcd', 20_000);
    assert.equal(nodes.filter((n) => n.canServe()).length, 1);
  });
});

describe('etcd client with several endpoints', () => {
  test('after every endpoint failed, it reaches etcd again within about a second of etcd coming back', async (t) => {
    const cluster = await startEtcdCluster({ size: 1 });
    t.after(() => cluster.close());
    const endpoint = cluster.endpoints[0]!;
    // Two endpoints (here the same member twice): the policy for several members applies.
    const client = createEtcdClient(conn([endpoint, endpoint]));
    t.after(() => client.close());
    await client.put('/multi/k').value('1');
    await cluster.stop(0);
    // Enough failures on both to have each skipped for a while.
    for (let i = 0; i < 4; i++) await client.get('/multi/k').string().catch(() => null);
    await cluster.start(0);
    const back = performance.now();
    let reachedAfter: number | null = null;
    while (reachedAfter === null && performance.now() - back < 10_000) {
      if ((await client.get('/multi/k').string().catch(() => null)) === '1') reachedAfter = performance.now() - back;
      else await new Promise((r) => setTimeout(r, 50));
    }
    assert.notEqual(reachedAfter, null, 'etcd was never reached again');
    // etcd3's default skipped a failing member for 5 s, though etcd was back.
    assert.ok(reachedAfter! < 2500, `reached ${Math.round(reachedAfter!)} ms after etcd was back`);
  });
});
