/**
 * The output limit with replies that wait for storage. Such a reply is counted
 * at a fixed size while it waits; one that turns out larger (an error naming a
 * long path, say) is checked again when it is written, so a client that stops
 * reading is cut off there rather than left to pile up replies in memory.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { SequencerServer } from '../../src/server/server.js';
import { SequenceError, type Caller, type SequenceSource } from '../../src/core/sequencer.js';
import { waitFor } from '../helpers/wait.js';

const cleanup: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

test('replies released by storage, larger than counted while they waited, cut off a client that does not read', async () => {
  const LIMIT = 65_536;
  const REQUESTS = 100;
  // Each reply ~200 KB: all of them would hold about 20 MB for a client that reads nothing.
  const big = 'x'.repeat(200_000);
  const waiting: Array<() => void> = [];
  const callers: Array<Caller | undefined> = [];
  const source: SequenceSource = {
    allocate: (_name, _count, caller) => {
      callers.push(caller);
      return new Promise<bigint>((_, reject) => waiting.push(() => reject(new SequenceError('ERR', big))));
    },
    current: () => 1n,
    snapshot: () => [],
  };
  const server = new SequencerServer(
    { source, maxBatch: 1000n, passwordDigest: null, info: () => '', authFailed: () => {} },
    { maxConnections: 10, idleTimeoutMs: 0, outputLimit: LIMIT },
  );
  const port = await server.listen('127.0.0.1', 0);
  cleanup.push(() => server.close());

  const client = net.connect(port, '127.0.0.1');
  cleanup.push(() => client.destroy());
  client.pause(); // never reads a reply
  let closed = false;
  client.on('close', () => (closed = true));
  client.on('error', () => {});
  // Counted at their waiting size, all of them fit under the limit.
  client.write('GETSEQ\r\n'.repeat(REQUESTS));
  await waitFor(() => waiting.length === REQUESTS, 'every request to wait for storage');

  // Released one at a time, as separate store writes would release them.
  let released = 0;
  while (released < REQUESTS && server.counters.outputLimitDisconnects === 0) {
    waiting[released++]!();
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(server.counters.outputLimitDisconnects, 1, `cut off (after ${released} of ${REQUESTS} replies)`);
  assert.ok(released < REQUESTS, 'before every reply was piled up');
  // Requests still waiting then take no numbers (see abandoned-requests.test.ts).
  assert.ok(callers.length === REQUESTS && callers.every((c) => c?.gone === true), 'every caller marked gone at the cut-off');
  client.resume(); // what was sent before the cut-off, then the end
  await waitFor(() => closed, 'the client to see its connection closed');
});
