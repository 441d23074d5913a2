/**
 * Group mode with a window that adapts (a --reserve above the starting window of
 * 1,000), with real processes: a burst grows the leader's window in etcd, a quiet
 * spell gives it back (the leader lowers its mark in etcd), and a leader killed
 * after that skips at most the starting window. The group tests in group.test.ts
 * keep a fixed window of 1,000, so that each failover's skip is bounded tightly;
 * this file checks what adapting adds to a group.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Etcd3 } from 'etcd3';
import { startEtcdCluster, etcdConnection, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { startGroup, type SequencerGroup } from '../helpers/group.js';
import { History, assertHistory } from '../helpers/history.js';
import { firstSuccess, recordFailure } from '../helpers/client-load.js';
import { SequencerClient } from '../../src/index.js';
import { createEtcdClient } from '../../src/election/etcd.js';
import { sequenceMarks } from '../helpers/wire.js';
import { waitFor } from '../helpers/wait.js';

const PREFIX = '/dolmeangi-window/';
/** Above the starting window: a burst may double it seven times, to 100,000, and a crash may skip that many. */
const RESERVE = 100_000n;
const START_WINDOW = 1000n;

describe('group mode with a window that adapts', () => {
  let etcd: EtcdCluster;
  let group: SequencerGroup;
  let direct: Etcd3;
  const history = new History();

  before(async () => {
    etcd = await startEtcdCluster({ size: 1 });
    direct = createEtcdClient(etcdConnection(etcd.endpoints));
    group = await startGroup(etcd, { size: 3, prefix: PREFIX, leaseTtl: 2, reserve: Number(RESERVE) });
    await group.waitForLeader();
  });

  after(async () => {
    direct?.close();
    await group?.close();
    await etcd?.close();
  });

  test('a burst grows the leader window in etcd, a quiet spell gives it back, and a leader killed then skips at most 1,000', async () => {
    const leader = await group.waitForLeader();
    const client = new SequencerClient({ servers: group.addresses, requestTimeoutMs: 5000 });
    try {
      // The burst: 40 rounds of 50 batches of 1,000 in flight at once.
      for (let round = 0; round < 40; round++) {
        await Promise.all(
          Array.from({ length: 50 }, async () => {
            const op = history.begin('burst', 1000n);
            try {
              history.ok(op, (await client.getBatch(1000n)).first);
            } catch (err) {
              recordFailure(history, op, err);
              throw err;
            }
          }),
        );
      }
      const port = group.nodes[leader]!.port;
      // The refill asked by the last batches lands a moment after their replies.
      let grown = await sequenceMarks(port);
      await waitFor(async () => {
        grown = await sequenceMarks(port);
        return grown.mark - grown.current > START_WINDOW;
      }, `the window to grow past ${START_WINDOW}`);
      assert.ok(grown.mark - grown.current <= RESERVE, `at most --reserve: ${grown.mark - grown.current} reserved`);
      // Quiet: within a second or two the leader cuts its window to the floor and lowers its mark in etcd to match.
      const stored = async (): Promise<bigint> => BigInt((await direct.get(`${PREFIX}marks/default`).string()) ?? '0');
      await waitFor(async () => (await stored()) - grown.current <= START_WINDOW, 'the mark in etcd lowered to the starting window', 30_000);
      assert.equal((await sequenceMarks(port)).current, grown.current, 'nothing was handed out while quiet');
      assert.equal(await stored(), grown.current + START_WINDOW);

      await group.nodes[leader]!.proc!.kill();
      const first = await firstSuccess(history, client, 'after-kill', 15_000);
      // The new leader starts at the lowered mark: the kill skipped the starting window, not the burst's.
      assert.equal(first, grown.current + START_WINDOW);
      assertHistory(history, { crashes: 1, reserve: RESERVE });
    } finally {
      await client.close();
    }
  });
});
