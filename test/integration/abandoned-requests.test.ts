/**
 * Requests that wait for storage and whose connection goes away before their
 * numbers are durable: a client that resets its connection, and the clients a shutdown cuts
 * off when its grace period runs out. Such a request must take no numbers;
 * otherwise they would be handed to nobody, a gap while the server runs, or
 * (after a clean stop) across the restart.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Sequencer } from '../../src/core/sequencer.js';
import { COMMANDS } from '../../src/commands/index.js';
import { startInProcessServer } from '../helpers/in-process-server.js';
import { WireClient } from '../helpers/wire.js';
import { waitFor } from '../helpers/wait.js';

const cleanup: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

/** A gapless server (every reply waits for its write) over a store the test can hold. */
async function gaplessServer() {
  const s = await startInProcessServer();
  cleanup.push(() => s.stop());
  return s;
}

/** What the next GETSEQ returns if every waiting request takes its numbers: INFO's `current`, which does not wait. */
function promised(seq: Sequencer): bigint | undefined {
  return seq.snapshot().find((s) => s.name === 'default')?.next;
}

async function connect(port: number): Promise<WireClient> {
  const c = await WireClient.connect(port);
  cleanup.push(() => c.close());
  return c;
}

test('a client that resets its connection while its requests wait for storage takes no numbers', async () => {
  const { store, seq, server, port } = await gaplessServer();
  const gone = await connect(port);
  store.pause();
  gone.send('GETSEQ\r\nGETSEQ_BATCH 10\r\n');
  await waitFor(() => promised(seq) === 12n, 'both requests to wait for storage');
  // In line behind them: whether they take numbers is not known yet.
  const looking = await connect(port);
  looking.send('CURRENT\r\n');
  const currentCalls = (): number => server.stats.calls[COMMANDS.findIndex((c) => c.name === 'CURRENT')]!;
  await waitFor(() => currentCalls() === 1, 'the server to read the CURRENT');
  assert.equal(looking.text, '', 'the CURRENT waits in line');
  // A reset, not a FIN: a client that only shuts down its sending side still gets its replies.
  gone.socket.resetAndDestroy();
  await looking.expect(':1\r\n');
  await waitFor(() => server.connectionCount === 1, 'the server to see the connection close');
  assert.equal(promised(seq), 1n, 'the requests of the closed connection are no longer counted');
  const staying = await connect(port);
  staying.send('GETSEQ\r\n');
  store.resume();
  await staying.expect(':1\r\n');
  assert.equal(seq.snapshot()[0]!.next, 2n, 'numbers 1..11 were not handed to the closed connection');
});

test('a write that lands in the same turn as the connection is destroyed gives its requests nothing', async () => {
  const { store, seq, server, port } = await gaplessServer();
  const c = await connect(port);
  store.pause();
  c.send('GETSEQ\r\n');
  await waitFor(() => promised(seq) === 2n, 'the request to wait for storage');
  const [conn] = (server as unknown as { connections: Set<{ socket: { destroy(): void } }> }).connections;
  // No 'close' event has run yet when the write's completion releases the waiting requests.
  conn!.socket.destroy();
  store.resume();
  await waitFor(() => store.calls.persisted >= 1, 'the write to land');
  assert.equal(seq.snapshot()[0]!.next, 1n, 'number 1 was not handed to the destroyed connection');
  // Written for it all the same: the next write gives it back, so a crash would not skip it.
  await waitFor(() => store.state().get('default') === 1n, 'number 1 to be given back');
  const other = await connect(port);
  await other.exchange('GETSEQ\r\n', ':1\r\n');
});

test('a clean stop that cuts off a request still waiting for storage after its grace period leaves no gap', async () => {
  const { store, seq, server, port } = await gaplessServer();
  const c = await connect(port);
  c.send('GETSEQ\r\n');
  await c.expect(':1\r\n');
  store.pause();
  c.send('GETSEQ\r\n');
  await waitFor(() => promised(seq) === 3n, 'the request to wait for storage');
  // The write is stuck past the grace period: the server gives up on the connection.
  await server.close(20);
  store.resume();
  assert.equal(await seq.close(), true);
  assert.equal(store.state().get('default'), 2n, 'the next start continues at 2: the cut-off request took nothing');
  await c.waitClosed();
  assert.equal(c.text, ':1\r\n');
});
