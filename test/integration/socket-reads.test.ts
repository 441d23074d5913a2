/**
 * The read path of client sockets (socket-reads.ts): the lean path is in use on
 * this Node.js, and both it and the fallback deliver every byte, in order, with
 * pause/resume and the client's FIN working as on a plain socket.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { readInto, leanReadsAvailable } from '../../src/server/socket-reads.js';
import { pino } from 'pino';
import { waitFor } from '../helpers/wait.js';
import { ask, resp } from '../helpers/wire.js';
import { parseConfig } from '../../src/config.js';
import { startServer } from '../../src/server/run.js';

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
});

interface Accepted {
  lean: boolean;
  socket: net.Socket;
  /** The client's port, kept while the socket is open (it reads undefined once closed). */
  port: number;
  /** Copies of every chunk, in order. */
  received: Buffer[];
  ended: boolean;
}

/** A server whose accepted sockets are read with readInto; resolves with its port. */
async function serve(pauseOnConnect: boolean, accepted: Accepted[]): Promise<number> {
  const server = net.createServer({ pauseOnConnect, allowHalfOpen: true }, (socket) => {
    sockets.push(socket);
    const a: Accepted = { lean: false, socket, port: socket.remotePort!, received: [], ended: false };
    accepted.push(a);
    a.lean = readInto(socket, (chunk) => a.received.push(Buffer.from(chunk)));
    socket.on('end', () => {
      a.ended = true;
      socket.end('bye');
    });
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

async function connect(port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  sockets.push(s);
  await once(s, 'connect');
  return s;
}

/** Distinct bytes per client and offset, so a chunk read into the wrong place shows. */
function pattern(client: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + client * 101 + (i >> 8)) & 0xff;
  return b;
}

test('this Node.js offers the lean read path', () => {
  // If this fails after a Node.js upgrade, the server still works (it reads through
  // 'data'), but each read costs more: see socket-reads.ts.
  assert.equal(leanReadsAvailable, true);
});

test("the server reads its plain TCP clients through the lean path", async () => {
  const running = await startServer(parseConfig(['--host=127.0.0.1', '--port=0', '--metrics-port=0', '--in-memory']), {
    log: pino({ enabled: false }),
  });
  try {
    assert.equal(await ask(running.port, resp('GETSEQ')), ':1\r\n');
    assert.equal(await ask(running.port, 'GETSEQ\r\n'), ':2\r\n');
    assert.equal(await ask(running.port, 'PING\r\n'), '+PONG\r\n');
    const { accepted, leanReads } = running.server.counters;
    assert.equal(accepted, 3);
    assert.equal(leanReads, accepted, 'every plain TCP connection takes the lean path');
    assert.equal(await running.close(), true);
  } finally {
    await running.close();
  }
});

for (const pauseOnConnect of [true, false]) {
  const path = pauseOnConnect ? 'lean path' : "fallback ('data')";
  test(`${path}: many clients' bytes arrive whole and in order, and FIN is seen`, async () => {
    const accepted: Accepted[] = [];
    const port = await serve(pauseOnConnect, accepted);
    const clients = await Promise.all([0, 1, 2, 3].map(() => connect(port)));
    await waitFor(() => accepted.length === 4, 'four accepted sockets');
    for (const a of accepted) assert.equal(a.lean, pauseOnConnect, 'lean path only for a socket not yet reading');
    const sent = clients.map((_, i) => pattern(i, 300_000 + i * 7_919));
    // Interleaved writes in uneven pieces, so reads of different sockets alternate.
    const offsets = clients.map(() => 0);
    for (let round = 0; offsets.some((o, i) => o < sent[i]!.length); round++) {
      clients.forEach((c, i) => {
        const step = 1 + ((round * 7_777 + i * 1_234) % 20_000);
        const piece = sent[i]!.subarray(offsets[i], offsets[i]! + step);
        offsets[i]! += piece.length;
        if (piece.length > 0) c.write(piece);
      });
    }
    const ports = clients.map((c) => c.localPort);
    const replies = clients.map((c) => {
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      return once(c, 'end').then(() => Buffer.concat(got).toString());
    });
    for (const c of clients) c.end();
    assert.deepEqual(await Promise.all(replies), ['bye', 'bye', 'bye', 'bye']);
    // Accepted sockets are matched to clients by their ports.
    for (const a of accepted) {
      const i = ports.indexOf(a.port);
      assert.ok(a.ended);
      const got = Buffer.concat(a.received);
      assert.equal(got.length, sent[i]!.length, `client ${i}: byte count`);
      assert.ok(got.equals(sent[i]!), `client ${i}: bytes differ`);
    }
  });

  test(`${path}: pause() stops delivery and resume() brings the rest`, async () => {
    const accepted: Accepted[] = [];
    const port = await serve(pauseOnConnect, accepted);
    const client = await connect(port);
    await waitFor(() => accepted.length === 1, 'an accepted socket');
    const a = accepted[0]!;
    client.write('first');
    await waitFor(() => Buffer.concat(a.received).toString() === 'first', 'the first bytes');
    a.socket.pause();
    const paused = a.received.length;
    client.write('second');
    // A round trip on another connection lets the loop run reads several times over.
    const other = await connect(port);
    await waitFor(() => accepted.length === 2, 'a second accepted socket');
    other.write('ping');
    await waitFor(() => accepted[1]!.received.length > 0, 'bytes on the other socket');
    assert.equal(a.received.length, paused, 'nothing delivered while paused');
    a.socket.resume();
    await waitFor(() => Buffer.concat(a.received).toString() === 'firstsecond', 'the bytes sent while paused');
  });
}
