/**
 * What a connection sees when the server stops cleanly: the requests read before
 * the stop are answered as usual; one that arrives during the stop is refused with
 * `-ERR server is shutting down`, which says nothing was done, instead of being
 * dropped with the connection (a GETSEQ lost that way is "maybe issued" to its
 * client); the connection closes once the client is quiet.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { startInProcessServer } from '../helpers/in-process-server.js';
import { COMMANDS } from '../../src/commands/index.js';
import { WireClient } from '../helpers/wire.js';
import { waitFor } from '../helpers/wait.js';

const REFUSED = '-ERR server is shutting down; retry on another server\r\n';

const cleanup: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

/** A server whose sequence core stays open when it stops: what is refused, the connection refused. */
async function server(reserve = 100n) {
  const s = await startInProcessServer(reserve);
  cleanup.push(() => s.stop());
  return s;
}

async function connect(port: number): Promise<WireClient> {
  const c = await WireClient.connect(port);
  cleanup.push(() => c.close());
  return c;
}

/** Sends `requests` with the store held, and begins the stop once the first waits for storage. */
async function stopWhileWaiting(requests: string) {
  const { store, server: s, port } = await server(0n);
  const c = await connect(port);
  store.pause();
  c.send(requests);
  await waitFor(() => store.pending().length > 0, 'a request to wait for storage');
  return { store, s, c, stopped: s.close() };
}

test('a request that arrives after the stop began is refused, not dropped; the connection then closes', async () => {
  const { seq, server: s, port } = await server();
  const c = await connect(port);
  await c.exchange('GETSEQ\r\n', ':1\r\n');
  const stopped = s.close();
  // Written before the server's quiet period can end: it is in the server's socket when it decides.
  c.send('GETSEQ\r\nGETSEQ_BATCH 5\r\nPING\r\n');
  await c.waitClosed();
  assert.equal(c.text, `:1\r\n${REFUSED.repeat(3)}`);
  assert.equal(c.error, null, 'closed cleanly');
  await stopped;
  assert.equal(seq.snapshot()[0]!.next, 2n, 'the refused requests took nothing');
});

test('requests read before the stop are still served, even those waiting for storage; QUIT during the stop is QUIT', async () => {
  const { store, s, c, stopped } = await stopWhileWaiting('GETSEQ\r\nGETSEQ\r\n');
  c.send('GETSEQ\r\nQUIT\r\nGETSEQ\r\n');
  const quits = (): number => s.stats.calls[COMMANDS.findIndex((command) => command.name === 'QUIT')]!;
  await waitFor(() => quits() === 1, 'the server to read the QUIT');
  assert.equal(c.text, '', 'every reply waits behind those waiting for storage');
  store.resume();
  await c.waitClosed();
  assert.equal(c.text, `:1\r\n:2\r\n${REFUSED}+OK\r\n`);
  await stopped;
});

test('a connection held when the stop began (an INFO behind a reply waiting for storage) serves what it read, then refuses', async () => {
  // INFO is made in its turn, after the GETSEQ: the connection holds everything behind it.
  const { store, c, stopped } = await stopWhileWaiting('GETSEQ\r\nINFO\r\n');
  c.send('GETSEQ\r\n');
  store.resume();
  await c.waitClosed();
  assert.match(c.text, /^:1\r\n\$\d+\r\n[^]*\r\n-ERR server is shutting down; retry on another server\r\n$/);
  await stopped;
});

test('stopServing() resolves once what was read is answered, while connections still refuse; close() once they are gone', async () => {
  const { server: s, port } = await server();
  const c = await connect(port);
  await c.exchange('GETSEQ\r\n', ':1\r\n');
  await s.stopServing();
  assert.equal(c.closed, false, 'still open, refusing');
  c.send('GETSEQ\r\n');
  await c.waitClosed();
  assert.equal(c.text, `:1\r\n${REFUSED}`);
  await s.close();
});

test('a client that stays quiet is closed within moments of the stop, with nothing sent to it', async () => {
  const { server: s, port } = await server();
  const quiet = await connect(port);
  await quiet.exchange('PING\r\n', '+PONG\r\n');
  quiet.reset();
  await s.close();
  await quiet.waitClosed();
  assert.equal(quiet.text, '');
});

test('a client that keeps its side open after the server\'s FIN does not hold the stop for the whole grace period', async () => {
  const { server: s, port } = await server();
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await once(socket, 'connect');
  const c = WireClient.wrap(socket);
  cleanup.push(() => c.close());
  await c.exchange('PING\r\n', '+PONG\r\n');
  let stopped = false;
  // A grace period of ten minutes: only the linger after the FIN can end this stop in time.
  void s.close(600_000).then(() => (stopped = true));
  await waitFor(() => stopped, 'the stop to end without waiting out its grace period', 10_000);
});
