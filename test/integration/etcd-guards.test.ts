/**
 * The two independent guards of group mode, each on its own: the serving
 * deadline (checked on every request, not only by a timer) and the fenced
 * write (the leader key's create revision, not only the store's last write).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient, EtcdLeadership, type EtcdConnection } from '../../src/election/etcd.js';
import { EtcdStore } from '../../src/store/etcd.js';
import { silentLogger } from '../../src/log.js';
import { startEtcdCluster, waitFor, type EtcdCluster } from '../helpers/etcd-cluster.js';

interface Node {
  readonly leadership: EtcdLeadership;
  readonly client: Etcd3;
  readonly lost: string[];
}

describe('etcd leadership guards', () => {
  let cluster: EtcdCluster;
  let direct: Etcd3;
  const nodes: Node[] = [];
  let prefixes = 0;

  const conn = (endpoints: readonly string[]): EtcdConnection => ({ endpoints, username: null, password: null });

  async function startNode(prefix: string, id: string, opts: { endpoints?: readonly string[]; ttl?: number } = {}): Promise<Node> {
    const connection = conn(opts.endpoints ?? cluster.endpoints);
    const client = createEtcdClient(connection);
    const leadership = new EtcdLeadership({
      client,
      connection,
      prefix,
      nodeId: id,
      advertise: `127.0.0.1:${7000 + nodes.length}`,
      leaseTtl: opts.ttl ?? 2,
      log: silentLogger(),
    });
    const node: Node = { leadership, client, lost: [] };
    leadership.on('lost', (reason) => node.lost.push(reason));
    nodes.push(node);
    await leadership.start();
    return node;
  }

  const freshPrefix = (): string => `/election-test-${++prefixes}/`;

  before(async () => {
    cluster = await startEtcdCluster({ size: 1 });
    direct = createEtcdClient(conn(cluster.endpoints));
  });

  after(async () => {
    for (const n of nodes) {
      await n.leadership.close();
      n.client.close();
    }
    direct?.close();
    await cluster?.close();
  });

  test('canServe turns false the moment the serving deadline passes, even before any timer runs', async () => {
    const prefix = freshPrefix();
    const a = await startNode(prefix, 'a');
    await waitFor(() => a.leadership.canServe(), 'a to lead');
    // Block the event loop (as a GC pause or SIGSTOP would) past the whole TTL: no timer can fire.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2500);
    assert.equal(a.leadership.canServe(), false);
  });

  test('a deposed leader cannot write even before the new leader has written anything', async () => {
    const prefix = freshPrefix();
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
    await assert.rejects(oldStore.persist(new Map([['s', 150n]])), { name: 'FencedError' });
    assert.equal(await direct.get(`${prefix}marks/s`).string(), '100');
  });
});
