/**
 * The output limit with replies that wait for storage. Such a reply is counted
 * at a fixed size while it waits; one that turns out larger (an error naming a
 * long path, say) is checked again when it is written, so a client that stops
 * reading is cut off there rather than left to pile up replies in memory.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { getDefaultHighWaterMark, setDefaultHighWaterMark } from 'node:stream';
import { SequencerServer } from '../../src/server/server.js';
import { SequenceError, type Caller, type SequenceSource } from '../../src/core/sequencer.js';
import { waitFor } from '../helpers/wait.js';
import { COMMANDS } from '../../src/commands/index.js';

const cleanup: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

/** A server over `source` with output limit `outputLimit`, and a client connected to it; both stopped after the file. */
async function serveOn(source: SequenceSource, outputLimit: number, info: () => string = () => '') {
  const server = new SequencerServer(
    { source, maxBatch: 1000n, passwordDigest: null, info, authFailed: () => {} },
    { maxConnections: 10, idleTimeoutMs: 0, outputLimit },
  );
  const port = await server.listen('127.0.0.1', 0);
  cleanup.push(() => server.close());
  const client = net.connect(port, '127.0.0.1');
  cleanup.push(() => client.destroy());
  return { server, client };
}

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
  const { server, client } = await serveOn(source, LIMIT);
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

test('held at the limit with a 64 KiB socket high-water mark (Node.js 22 on): every reply comes once the client reads', async () => {
  // From Node.js 22 on, a socket asks for 'drain' only past 64 KiB of unsent bytes,
  // so a held connection whose last write stayed under it must wake on the write's
  // completion instead. The same default is set here, for the server's sockets only.
  const LIMIT = 65_536;
  const ROUNDS = 200;
  const GETS = 100;
  const before = getDefaultHighWaterMark(false);
  setDefaultHighWaterMark(false, 65_536);
  cleanup.push(() => setDefaultHighWaterMark(false, before));
  // Numbers come from a store that commits on the next turn, as the gapless mode does.
  let next = 0n;
  let allocated = 0;
  const source: SequenceSource = {
    allocate: () => {
      allocated++;
      const n = ++next;
      return new Promise<bigint>((resolve) => setImmediate(() => resolve(n)));
    },
    current: () => next,
    snapshot: () => [],
  };
  const { client } = await serveOn(source, LIMIT);
  await new Promise((r) => client.once('connect', r));
  setDefaultHighWaterMark(false, before); // the server's socket has its own by now
  client.pause();
  const arg = 'p'.repeat(45_000);
  const ping = `*2\r\n$4\r\nPING\r\n$${arg.length}\r\n${arg}\r\n`;
  client.write((ping + 'GETSEQ\r\n'.repeat(GETS)).repeat(ROUNDS));
  // The client reads only once the server, its replies unread, has stopped taking requests.
  let last = -1;
  await waitFor(async () => {
    const seen = allocated;
    await new Promise((r) => setTimeout(r, 50));
    const still = allocated === seen && seen > 0 && seen === last;
    last = seen;
    return still;
  }, 'the server to hold the connection', 10_000);
  assert.ok(allocated < ROUNDS * GETS, `held before serving everything (${allocated} numbers)`);

  let text = '';
  client.setEncoding('latin1');
  client.on('data', (d: string) => (text += d));
  client.resume();
  let expected = '';
  for (let r = 0, n = 0; r < ROUNDS; r++) {
    expected += `$${arg.length}\r\n${arg}\r\n`;
    for (let i = 0; i < GETS; i++) expected += `:${++n}\r\n`;
  }
  await waitFor(() => text.length >= expected.length, 'every reply', 15_000).catch((err: Error) => {
    throw new Error(`${err.message}: ${allocated} of ${ROUNDS * GETS} numbers taken, ${text.length} of ${expected.length} bytes read`);
  });
  assert.equal(text, expected);
});

/**
 * A server whose every GETSEQ waits until `release()`, whose INFO answers `body`,
 * and a client that has sent `request` and collects what it gets back.
 */
async function infoBehindWaitingGetseq(outputLimit: number, body: string, request: string) {
  const state = { made: 0, release: null as (() => void) | null, received: '' };
  const source: SequenceSource = {
    allocate: () => new Promise<bigint>((resolve) => (state.release = () => resolve(1n))),
    current: () => 1n,
    snapshot: () => [],
  };
  const { server, client } = await serveOn(source, outputLimit, () => (state.made++, body));
  client.setEncoding('latin1');
  client.on('data', (d: string) => (state.received += d));
  client.write(request);
  const infoCalls = (): number => server.stats.calls[COMMANDS.findIndex((c) => c.name === 'INFO')]!;
  return { state, infoCalls };
}

test('INFO behind a reply that waits for storage is made in its turn, one at a time: the requests behind it wait, not thousands of unmade INFOs', async () => {
  const INFOS = 1000;
  const body = 'x'.repeat(20_000);
  // Counted at 256 bytes each while unmade, 4,000 of them would fit under the limit, then be made at once.
  const { state, infoCalls } = await infoBehindWaitingGetseq(1 << 20, body, 'GETSEQ\r\n' + 'INFO\r\n'.repeat(INFOS));
  await waitFor(() => infoCalls() > 0 && state.release !== null, 'the GETSEQ to wait and an INFO to queue behind it');
  assert.equal(infoCalls(), 1, 'the requests behind the first INFO wait in the decoder');
  assert.equal(state.made, 0, 'INFO is made in its turn, after the reply before it');
  state.release!();
  const reply = `$${body.length}\r\n${body}\r\n`;
  await waitFor(() => state.received.length === 4 + INFOS * reply.length, 'every reply');
  assert.equal(state.received, ':1\r\n' + reply.repeat(INFOS));
  assert.equal(state.made, INFOS);
});

test('an INFO that reaches the output limit behind a waiting reply is held as unmade too: no second INFO is taken behind it', async () => {
  // The echo (3,709 bytes) and the waiting GETSEQ (counted 256) stay under the limit; the INFO (256 more) reaches it.
  const echo = 'x'.repeat(3700);
  const { state, infoCalls } = await infoBehindWaitingGetseq(4096, 'facts', `PING ${echo}\r\nGETSEQ\r\nINFO\r\nINFO\r\nINFO\r\n`);
  await waitFor(() => infoCalls() > 0 && state.received.length > 0, 'the echo to be written and an INFO to queue');
  assert.equal(infoCalls(), 1, 'the INFOs behind the first wait in the decoder');
  assert.equal(state.made, 0);
  state.release!();
  const reply = '$5\r\nfacts\r\n';
  await waitFor(() => state.received.endsWith(reply.repeat(3)), 'every reply');
  assert.equal(state.received, `$3700\r\n${echo}\r\n:1\r\n${reply.repeat(3)}`);
});
