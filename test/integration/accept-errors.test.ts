/**
 * A failed accept (EMFILE when descriptors run out, ENFILE, ENOMEM) reaches a
 * listening server as an 'error' event. It must cost that one client, never
 * the process: counted, reported, and the server serves on.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { SequencerServer } from '../../src/server/server.js';
import { Sequencer } from '../../src/core/sequencer.js';
import { WireClient } from '../helpers/wire.js';

const cleanup: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

test('a failed accept on the client port is counted and reported, and the server serves on', async () => {
  const seq = new Sequencer({ store: null, initial: 1n, reserve: 0n, maxSequences: 10 });
  await seq.open();
  const server = new SequencerServer(
    { source: seq, maxBatch: 1000n, passwordDigest: null, info: () => '', authFailed: () => {} },
    { maxConnections: 10, idleTimeoutMs: 0, outputLimit: 1 << 20 },
  );
  const reported: string[] = [];
  server.onAcceptError = (err) => reported.push(err.message);
  const port = await server.listen('127.0.0.1', 0);
  cleanup.push(() => server.close(0));
  // What Node emits when libuv reports a failed accept; made to fail on demand
  // here, since running a real process out of descriptors is not repeatable.
  const listener = (server as unknown as { listeners: net.Server[] }).listeners[0]!;
  listener.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' }));
  assert.equal(server.counters.acceptErrors, 1);
  assert.deepEqual(reported, ['accept EMFILE']);
  const c = await WireClient.connect(port);
  cleanup.push(() => c.close());
  await c.exchange('GETSEQ\r\n', ':1\r\n');
});
