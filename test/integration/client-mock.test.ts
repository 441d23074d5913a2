/**
 * SequencerClient against scripted mock servers: the failure modes a real
 * server rarely shows on demand (hangs, garbage, half replies, redirects).
 */
import { readFile } from 'node:fs/promises';
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import {
  ConnectionClosedError,
  NoServerAvailableError,
  NotLeaderError,
  ReplyProtocolError,
  SequencerClient,
  ServerError,
  TimeoutError,
  type SequencerClientOptions,
} from '../../src/index.js';
import { Connection } from '../../src/client/connection.js';
import { makeCerts } from '../helpers/certs.js';
import { counterScript, startMockServer, type MockConnection, type MockOptions, type MockServer, type Script } from '../helpers/mock-server.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const servers: MockServer[] = [];
const clients: SequencerClient[] = [];
let certs: Awaited<ReturnType<typeof makeCerts>> | null = null;
/** Closes the servers made by certificateRefuser, and their sockets. */
const refusers: Array<() => void> = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.close()));
  for (const stop of refusers) stop();
  await certs?.remove();
});

/** One set of test certificates for every TLS test here, made on first use. */
let tlsMaterial: Promise<{ key: Buffer; cert: Buffer; ca: Buffer }> | null = null;
function tlsFiles(): Promise<{ key: Buffer; cert: Buffer; ca: Buffer }> {
  tlsMaterial ??= makeCerts().then(async (made) => {
    certs = made;
    const [key, cert, ca] = await Promise.all([readFile(made.serverKey), readFile(made.serverCert), readFile(made.caCert)]);
    return { key, cert, ca };
  });
  return tlsMaterial;
}

async function mock(script: Script, options?: MockOptions): Promise<MockServer> {
  const server = await startMockServer(script, options);
  servers.push(server);
  return server;
}

function client(options: SequencerClientOptions): SequencerClient {
  const c = new SequencerClient({ requestTimeoutMs: 2000, connectTimeoutMs: 1000, ...options });
  clients.push(c);
  return c;
}

test('pipelined calls share one connection, leave in few writes, and get their own replies', async () => {
  const server = await mock(counterScript());
  const c = client({ servers: [server.address] });
  const numbers = await Promise.all(Array.from({ length: 1000 }, () => c.getNextSequence()));
  assert.equal(new Set(numbers).size, 1000);
  assert.deepEqual([...numbers].sort((a, b) => (a < b ? -1 : 1)), numbers, 'replies matched to requests in order');
  assert.equal(server.connections.length, 1);
  assert.ok(server.connections[0]!.chunks < 20, `${server.connections[0]!.chunks} chunks for 1000 requests`);
  assert.equal(await c.current(), 1001n);
});

test('getBatch, ping, info and named sequences', async () => {
  const server = await mock(counterScript(100n));
  const c = client({ servers: [server.address] });
  assert.deepEqual(await c.getBatch(10), { first: 100n, count: 10n });
  assert.deepEqual(await c.getBatch(5n, 'orders'), { first: 110n, count: 5n });
  assert.equal(await c.getNextSequence('orders'), 115n);
  await c.ping();
  const info = await c.info();
  assert.equal(info.fields.role, 'standalone');
  assert.deepEqual(info.sequences, [{ name: 'default', current: 116n, durableMark: null }]);
  assert.match(info.raw, /^# Server\r\n/);
  assert.deepEqual(server.requests.slice(0, 3), [['GETSEQ_BATCH', '10'], ['GETSEQ_BATCH', '5', 'orders'], ['GETSEQ', 'orders']]);
  const sent = server.requests.length;
  await assert.rejects(c.getBatch(0), RangeError);
  await assert.rejects(c.getBatch(1.5), RangeError);
  // A number past 2^53 may not be the count the caller wrote (2 ** 53 + 1 is 2 ** 53): a bigint says it exactly.
  await assert.rejects(c.getBatch(2 ** 53 + 2), RangeError);
  assert.equal(server.requests.length, sent, 'nothing refused was sent');
});

test("the seed's constructor form: new SequencerClient(host, port)", async () => {
  const server = await mock(counterScript());
  const c = new SequencerClient('127.0.0.1', server.port);
  clients.push(c);
  assert.equal(await c.getNextSequence(), 1n);
});

test('a server that never answers: TimeoutError, and the next call uses a fresh connection', async () => {
  let answer = false;
  const server = await mock((words, connection) => {
    if (answer) connection.send('+PONG\r\n');
  });
  const c = client({ servers: [server.address], requestTimeoutMs: 200 });
  const started = performance.now();
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof TimeoutError, String(error));
  assert.ok(!(error instanceof NoServerAvailableError), 'it was sent: a plain timeout');
  assert.match(error.message, /skipped, never handed out again/);
  assert.ok(performance.now() - started < 1500);
  answer = true;
  await c.ping();
  assert.equal(server.connections.length, 2, 'the stalled connection was dropped');
});

test('garbage from the server: ReplyProtocolError, and the connection is dropped', async () => {
  const server = await mock((_words, connection) => connection.send('!garbage\r\n'));
  const c = client({ servers: [server.address] });
  await assert.rejects(c.getNextSequence(), ReplyProtocolError);
  await waitFor(() => server.connections[0]!.socket.destroyed || server.connections[0]!.socket.readableEnded, 'the connection to close');
});

test('an integer no server hands out (below 0, above 2^63-1): ReplyProtocolError, and the connection is dropped', async () => {
  for (const bad of ['-5', '9223372036854775808']) {
    let answered = 0;
    const count = counterScript(3n);
    const server = await mock((words, connection) => (answered++ === 0 ? connection.send(`:${bad}\r\n`) : count(words, connection)));
    const c = client({ servers: [server.address] });
    await assert.rejects(c.getNextSequence(), (err: unknown) => err instanceof ReplyProtocolError && err.message.includes(`integer ${bad} in reply to GETSEQ`));
    assert.equal(await c.getNextSequence(), 3n);
    assert.equal(server.connections.length, 2, 'the next call came on a new connection');
  }
});

test('a well-framed reply of the wrong kind: ReplyProtocolError, and the connection is dropped', async () => {
  let answered = 0;
  const count = counterScript(3n);
  const server = await mock((words, connection) => (answered++ === 0 ? connection.send('+OK\r\n') : count(words, connection)));
  const c = client({ servers: [server.address] });
  await assert.rejects(c.getNextSequence(), (err: unknown) => err instanceof ReplyProtocolError && /simple string 'OK' in reply to GETSEQ/.test(err.message));
  await waitFor(() => server.connections[0]!.socket.destroyed || server.connections[0]!.socket.readableEnded, 'the connection to close');
  assert.equal(await c.getNextSequence(), 3n);
  assert.equal(server.connections.length, 2, 'the next call came on a new connection');
});

/** A script whose first connection answers its first `requests` requests with `raw`, all at once; later connections get `then`. */
function badFirstConnection(requests: number, raw: string, then: Script): Script {
  let first: MockConnection | null = null;
  return (words, connection) => {
    first ??= connection;
    if (connection !== first) then(words, connection);
    else if (connection.requests.length === requests) connection.send(raw);
  };
}

/** A call that failed as on a dropped connection after its request left: numbers may have been issued. */
function assertDroppedAfterSending(result: PromiseSettledResult<unknown>, why: RegExp): void {
  const err: unknown = result.status === 'rejected' ? result.reason : null;
  assert.ok(err instanceof ConnectionClosedError, String(err));
  assert.equal(err.requestSent, true, 'sent, so numbers may have been issued');
  assert.match(err.message, why);
}

test('a reply of the wrong kind fails the calls pipelined behind it too: their replies cannot be trusted', async () => {
  // All three replies arrive in one read, so the calls behind would be answered before the first caller's code runs.
  const server = await mock((_words, connection) => {
    if (connection.requests.length === 3) connection.send('+OK\r\n:3\r\n:4\r\n');
  });
  const c = client({ servers: [server.address] });
  const results = await Promise.allSettled([c.getNextSequence(), c.getNextSequence(), c.getNextSequence()]);
  assert.equal(server.connections[0]!.requests.length, 3, 'the three calls were pipelined on one connection');
  const [first, ...behind] = results;
  assert.ok(first.status === 'rejected' && first.reason instanceof ReplyProtocolError, String(first.status === 'rejected' ? first.reason : first.value));
  for (const result of behind) {
    assert.equal(result.status, 'rejected', 'a number read after the wrong reply is not handed to the caller');
    assertDroppedAfterSending(result, /simple string 'OK' in reply to GETSEQ/);
  }
  await waitFor(() => server.connections[0]!.socket.destroyed || server.connections[0]!.socket.readableEnded, 'the connection to close');
});

test('garbage fails the call it answers; the calls pipelined behind it fail as a dropped connection, and CURRENT is resent', async () => {
  const server = await mock(badFirstConnection(3, '!garbage\r\n', counterScript(100n)));
  const c = client({ servers: [server.address] });
  const [first, current, last] = await Promise.allSettled([c.getNextSequence(), c.current(), c.getNextSequence()]);
  assert.equal(server.connections[0]!.requests.length, 3, 'the three calls were pipelined on one connection');
  assert.ok(first.status === 'rejected' && first.reason instanceof ReplyProtocolError, String(first.status === 'rejected' ? first.reason : first.value));
  assert.deepEqual(current, { status: 'fulfilled', value: 100n }, 'CURRENT is safe to send again');
  assertDroppedAfterSending(last, /unexpected reply type byte '!'/);
  assert.equal(server.connections.length, 2);
});

test('an INFO reply of the wrong kind fails the INFO, and CURRENT pipelined behind it is resent on a new connection', async () => {
  const server = await mock(badFirstConnection(2, ':1\r\n:2\r\n', counterScript(9n)));
  const c = client({ servers: [server.address] });
  const [info, current] = await Promise.allSettled([c.info(), c.current()]);
  assert.ok(info.status === 'rejected' && info.reason instanceof ReplyProtocolError && /integer 1 in reply to INFO/.test(info.reason.message));
  assert.deepEqual(current, { status: 'fulfilled', value: 9n });
  assert.equal(server.connections.length, 2);
});

test('a reply nobody asked for is a protocol error that drops the connection', async () => {
  const server = await mock((_words, connection) => connection.send('+PONG\r\n+PONG\r\n'));
  const c = client({ servers: [server.address] });
  await c.ping();
  await waitFor(() => server.connections[0]!.socket.destroyed || server.connections[0]!.socket.readableEnded, 'the connection to close');
});

test('the connection drops in the middle of a GETSEQ reply: ConnectionClosedError, never resent', async () => {
  const server = await mock((_words, connection) => connection.socket.end(':12'));
  const c = client({ servers: [server.address] });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof ConnectionClosedError, String(error));
  assert.equal(error.requestSent, true);
  assert.equal(server.requests.length, 1, 'a GETSEQ whose reply was lost is not sent again');
});

test('the same for GETSEQ_BATCH', async () => {
  const server = await mock((_words, connection) => connection.socket.destroy());
  const c = client({ servers: [server.address] });
  await assert.rejects(c.getBatch(100), ConnectionClosedError);
  assert.equal(server.requests.length, 1);
});

test('CURRENT, PING and INFO are resent after a lost reply', async () => {
  const healthy = counterScript(7n);
  const server = await mock((words, connection) => {
    if (server.connections.length === 1) connection.socket.end(':1');
    else healthy(words, connection);
  });
  const c = client({ servers: [server.address] });
  assert.equal(await c.current(), 7n);
  assert.equal(server.connections.length, 2);
});

test('NOTLEADER with an address: the client follows it and the call succeeds there', async () => {
  const leader = await mock(counterScript(500n));
  const follower = await mock((_words, connection) => connection.send(`-NOTLEADER ${leader.address}\r\n`));
  const c = client({ servers: [follower.address] });
  const numbers = await Promise.all([c.getNextSequence(), c.getNextSequence(), c.getNextSequence()]);
  assert.deepEqual([...numbers].sort(), [500n, 501n, 502n]);
  assert.equal(await c.getNextSequence(), 503n, 'later calls go straight to the leader');
  assert.equal(follower.requests.length, 3);
  assert.equal(leader.connections.length, 1);
});

test('NOTLEADER naming an IPv6 leader in brackets: the client follows it', async () => {
  const leader = await mock(counterScript(40n), { host: '::1' });
  assert.match(leader.address, /^\[::1\]:\d+$/);
  const follower = await mock((_words, connection) => connection.send(`-NOTLEADER ${leader.address}\r\n`));
  const c = client({ servers: [follower.address] });
  assert.equal(await c.getNextSequence(), 40n);
  assert.equal(leader.requests.length, 1);
});

test('a redirect loop ends in NotLeaderError after maxRedirects hops', async () => {
  let a: MockServer | null = null;
  const b = await mock((_words, connection) => connection.send(`-NOTLEADER ${a!.address}\r\n`));
  a = await mock((_words, connection) => connection.send(`-NOTLEADER ${b.address}\r\n`));
  const c = client({ servers: [a.address], maxRedirects: 3 });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NotLeaderError, String(error));
  assert.match(error.message, /3 NOTLEADER redirects/);
  assert.equal(a.requests.length + b.requests.length, 4, 'the first request and 3 redirects');
});

/** A call in flight whose outcome can be looked at without awaiting it. */
function watch<T>(promise: Promise<T>): { settled: () => boolean; result: Promise<T> } {
  let done = false;
  const result = promise.finally(() => (done = true));
  return { settled: () => done, result };
}

test('a dead leader still named by the others: the call waits for the election instead of counting hops', async () => {
  // After a leader dies, the other members name it until its lease runs out.
  const dead = `127.0.0.1:${await freePort()}`;
  const successor = await mock(counterScript(70n));
  let elected = false;
  const follower = await mock((_words, connection) =>
    connection.send(`-NOTLEADER ${elected ? successor.address : dead}\r\n`),
  );
  const c = client({ servers: [follower.address], requestTimeoutMs: 5000, maxRedirects: 1, reconnect: { minDelayMs: 10, maxDelayMs: 40 } });
  const started = performance.now();
  const call = watch(c.getNextSequence());
  await waitFor(() => follower.requests.length >= 5 || call.settled(), 'the follower to name the dead leader five times');
  elected = true;
  assert.equal(await call.result, 70n);
  const elapsed = performance.now() - started;
  // Paced by the backoff (at least 10 ms a round), not a tight loop of connects.
  assert.ok(follower.requests.length <= elapsed / 10 + 3, `${follower.requests.length} requests in ${Math.round(elapsed)} ms`);
});

test('a named leader whose connection attempts time out is not dialled again on every retry', async () => {
  const { key, cert, ca } = await tlsFiles();
  // A host that is down: the handshake never completes within connectTimeoutMs.
  const dead = await mock(() => {}, { tls: { key, cert }, handshakeDelayMs: 60_000 });
  const successor = await mock(counterScript(90n), { tls: { key, cert } });
  let asked = 0;
  const follower = await mock(
    (_words, connection) => connection.send(`-NOTLEADER ${++asked <= 6 ? dead.address : successor.address}\r\n`),
    { tls: { key, cert } },
  );
  const c = client({ servers: [follower.address], tls: { ca }, connectTimeoutMs: 300, requestTimeoutMs: 5000, reconnect: { minDelayMs: 10, maxDelayMs: 40 } });
  assert.equal(await c.getNextSequence(), 90n);
  assert.equal(asked, 7);
  // The first dial times out; the repeats that follow within connectTimeoutMs go back to the follower.
  assert.ok(dead.accepted <= 2, `the dead leader was dialled ${dead.accepted} times for 6 redirects`);
});

test('a named leader that timed out is tried last in the rounds that follow, also when it is listed among the servers', async () => {
  const { key, cert, ca } = await tlsFiles();
  const dead = await mock(() => {}, { tls: { key, cert }, handshakeDelayMs: 60_000 });
  const successor = await mock(counterScript(70n), { tls: { key, cert } });
  let asked = 0;
  const follower = await mock(
    (_words, connection) => connection.send(`-NOTLEADER ${++asked <= 4 ? dead.address : successor.address}\r\n`),
    { tls: { key, cert } },
  );
  // Every member listed, the dead one right after the follower that keeps naming it.
  const c = client({
    servers: [follower.address, dead.address, successor.address],
    tls: { ca },
    connectTimeoutMs: 300,
    requestTimeoutMs: 5000,
    reconnect: { minDelayMs: 10, maxDelayMs: 40 },
  });
  assert.equal(await c.getNextSequence(), 70n);
  assert.equal(dead.accepted, 1, `the dead leader was dialled ${dead.accepted} times`);
});

test('a server that never answers costs one call its timeout; the next call goes to the next server listed', async () => {
  const hung = await mock(() => {});
  const good = await mock(counterScript(5n));
  const c = client({ servers: [hung.address, good.address], requestTimeoutMs: 500 });
  await assert.rejects(c.current(), TimeoutError);
  assert.equal(await c.current(), 5n);
  assert.equal((await c.info()).raw.startsWith('# Server'), true);
});

test('a slow server keeps every call it answers in time, whatever else is listed', async () => {
  let next = 0;
  const slow = await mock((words, connection) => {
    setTimeout(() => connection.send(words[0] === 'PING' ? '+PONG\r\n' : `:${++next}\r\n`), 600);
  });
  const other = await mock(counterScript(100n));
  const c = client({ servers: [slow.address, other.address], requestTimeoutMs: 1000 });
  // Pipelined on one connection: neither is given less than the full timeout.
  const [n] = await Promise.all([c.getNextSequence(), c.ping()]);
  assert.equal(n, 1n);
  assert.equal(other.requests.length, 0);
});

test('a dead leader named until the deadline: NotLeaderError naming it, not before the call timed out', async () => {
  const dead = `127.0.0.1:${await freePort()}`;
  const follower = await mock((_words, connection) => connection.send(`-NOTLEADER ${dead}\r\n`));
  const c = client({ servers: [follower.address], requestTimeoutMs: 400, maxRedirects: 1, reconnect: { minDelayMs: 10, maxDelayMs: 40 } });
  const started = performance.now();
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  const elapsed = performance.now() - started;
  // A pause gives up only when less than 50 ms are left for another try; a
  // last request already sent when the deadline passes times out instead.
  if (error instanceof NotLeaderError) {
    assert.equal(error.leader, dead);
    assert.match(error.message, /did not answer in time/);
  } else {
    assert.ok(error instanceof TimeoutError, String(error));
  }
  assert.ok(elapsed >= 400 - 50 - 5, `gave up after ${Math.round(elapsed)} ms of 400`);
  assert.ok(follower.requests.length > 2);
  // Paced by the backoff (at least 10 ms a round), not a tight loop.
  assert.ok(follower.requests.length <= elapsed / 10 + 3, `${follower.requests.length} requests in ${Math.round(elapsed)} ms`);
});

test('a dead leader still being dialled at the deadline: NotLeaderError naming it, not that no server could be reached', async () => {
  const { key, cert, ca } = await tlsFiles();
  // A host that drops packets: the handshake never completes, and connectTimeoutMs is longer than the call.
  const dead = await mock(() => {}, { tls: { key, cert }, handshakeDelayMs: 60_000 });
  const follower = await mock((_words, connection) => connection.send(`-NOTLEADER ${dead.address}\r\n`), { tls: { key, cert } });
  const c = client({ servers: [follower.address], tls: { ca }, connectTimeoutMs: 3000, requestTimeoutMs: 500 });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NotLeaderError, String(error));
  assert.equal(error.leader, dead.address);
  assert.match(error.message, new RegExp(`no leader answered before the request timeout; the last one named was ${dead.address}`));
  assert.ok(dead.accepted >= 1, 'the named leader was dialled');
});

test('a call waiting out an election tries until just before its timeout, not a backoff step early', async () => {
  const server = await mock((_words, connection) => connection.send('-NOTLEADER\r\n'));
  // A first step of 2 to 4 s, longer than the whole call: the pause is cut short for one last try.
  const c = client({ servers: [server.address], requestTimeoutMs: 1500, reconnect: { minDelayMs: 4000, maxDelayMs: 4000 } });
  const started = performance.now();
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  const elapsed = performance.now() - started;
  assert.ok(error instanceof NotLeaderError, String(error));
  assert.ok(elapsed >= 1500 - 60, `gave up after ${Math.round(elapsed)} ms of 1500`);
  // At least: a timer may fire early by as much as the event loop's clock lags, and leave room for a third.
  assert.ok(server.requests.length >= 2, `the first try, and one just before the timeout: ${server.requests.length}`);
});

test('on a slow link the last try before the deadline leaves time for its answer: NotLeaderError, not a timeout', async () => {
  // Every NOTLEADER takes 100 ms: a last try 50 ms before the deadline could not be answered in time.
  const server = await mock((_words, connection) => setTimeout(() => connection.send('-NOTLEADER\r\n'), 100));
  const c = client({ servers: [server.address], requestTimeoutMs: 1500, reconnect: { minDelayMs: 4000, maxDelayMs: 4000 } });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NotLeaderError, String(error));
  assert.equal(server.requests.length, 2, 'the first try, and one last try early enough to be answered');
});

test('a server that answered late (paused, then resumed) costs the call no try on the others: it goes on to the one that serves', async () => {
  // A leader paused for 1.2 s of a 2 s call wakes up, no longer leader, and answers NOTLEADER.
  const resumed = await mock((_words, connection) => setTimeout(() => connection.send('-NOTLEADER\r\n'), 1200));
  const leader = await mock(counterScript(70n));
  const c = client({ servers: [resumed.address, leader.address], requestTimeoutMs: 2000, reconnect: { minDelayMs: 20, maxDelayMs: 50 } });
  assert.equal(await c.getNextSequence(), 70n);
  assert.equal(resumed.requests.length, 1);
});

test('a slow first connection does not count as a slow reply: the call still waits out the election', async () => {
  // The first server listed never answers AUTH: the call spends connectTimeoutMs there before it reaches the follower.
  const hung = await mock(() => {});
  const started = performance.now();
  const count = counterScript(40n);
  const follower = await mock((words, connection) => {
    if (words[0] === 'AUTH') connection.send('+OK\r\n');
    else if (performance.now() - started < 1600) connection.send('-NOTLEADER\r\n');
    else count(words, connection);
  });
  const c = client({
    servers: [hung.address, follower.address],
    password: 'pw',
    connectTimeoutMs: 1000,
    requestTimeoutMs: 3000,
    reconnect: { minDelayMs: 50, maxDelayMs: 200 },
  });
  assert.equal(await c.getNextSequence(), 40n);
});

test('a new leader still loading its marks: the call goes back to it until it serves', async () => {
  // Elected, it answers a bare NOTLEADER until its marks are loaded; the others already name it.
  let loaded = false;
  const count = counterScript(300n);
  const leader = await mock((words, connection) => (loaded ? count(words, connection) : connection.send('-NOTLEADER\r\n')));
  const follower = await mock((_words, connection) => connection.send(`-NOTLEADER ${leader.address}\r\n`));
  const c = client({ servers: [follower.address], requestTimeoutMs: 5000, maxRedirects: 1, reconnect: { minDelayMs: 10, maxDelayMs: 40 } });
  const call = watch(c.getNextSequence());
  await waitFor(() => leader.requests.length >= 3 || call.settled(), 'the loading leader to be asked three times');
  loaded = true;
  assert.equal(await call.result, 300n);
});

test('NOTLEADER with no address: the next server in the list, after a backoff', async () => {
  const candidate = await mock((_words, connection) => connection.send('-NOTLEADER\r\n'));
  const leader = await mock(counterScript(9n));
  const c = client({ servers: [candidate.address, leader.address], reconnect: { minDelayMs: 10, maxDelayMs: 20 } });
  assert.equal(await c.getNextSequence(), 9n);
  assert.equal(candidate.requests.length, 1);
});

test('NOTLEADER with no address from every server: the call keeps trying until its timeout', async () => {
  const server = await mock((_words, connection) => connection.send('-NOTLEADER\r\n'));
  const c = client({ servers: [server.address], requestTimeoutMs: 400, maxRedirects: 1, reconnect: { minDelayMs: 10, maxDelayMs: 40 } });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  // Where the deadline falls decides the error: during a backoff, the last NOTLEADER;
  // during a last attempt already sent, a timeout (that request may have taken a number).
  if (error instanceof NotLeaderError) assert.equal(error.leader, null);
  else assert.ok(error instanceof TimeoutError, String(error));
  assert.ok(server.requests.length > 2, 'waiting for an election is not bounded by maxRedirects');
});

test('servers are tried in order: a dead first server is skipped', async () => {
  const dead = await freePort();
  const live = await mock(counterScript());
  const c = client({ servers: [`127.0.0.1:${dead}`, live.address] });
  assert.equal(await c.getNextSequence(), 1n);
});

test('with a password, AUTH goes first on every new connection', async () => {
  const healthy = counterScript();
  const server = await mock(healthy);
  const c = client({ servers: [server.address], password: 's3cret pass' });
  assert.equal(await c.getNextSequence(), 1n);
  server.connections[0]!.socket.destroy();
  await waitFor(() => server.connections[0]!.socket.destroyed, 'the server side to close');
  assert.equal(await c.current(), 2n);
  assert.equal(server.connections.length, 2);
  for (const connection of server.connections) assert.deepEqual(connection.requests[0], ['AUTH', 's3cret pass']);
});

test('a refused password fails the call at once with ServerError WRONGPASS', async () => {
  const server = await mock((words, connection) => {
    connection.send(words[0] === 'AUTH' ? '-WRONGPASS invalid password\r\n' : ':1\r\n');
  });
  const c = client({ servers: [server.address], password: 'nope', requestTimeoutMs: 5000 });
  const started = performance.now();
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof ServerError, String(error));
  assert.equal(error.wireCode, 'WRONGPASS');
  assert.ok(performance.now() - started < 2000, 'not a timeout');
  assert.equal(server.requests.length, 1, 'GETSEQ was never sent');
});

test('a call left with little time by a slow connect fails alone: the calls behind it on the connection still get their numbers', async () => {
  let next = 0;
  const server = await mock((words, connection) => {
    // AUTH takes most of the calls' 2 s; then every request is answered in 600 ms, too late
    // for the first call (its request leaves 500 ms before its deadline, so a stall of up to
    // 500 ms still sends it), and 500 ms early for the later ones.
    if (words[0] === 'AUTH') setTimeout(() => connection.send('+OK\r\n'), 1500);
    else setTimeout(() => connection.send(`:${++next}\r\n`), 600);
  });
  const c = client({ servers: [server.address], password: 'pw', requestTimeoutMs: 2000, connectTimeoutMs: 2500 });
  const early = c.getNextSequence().then(() => null, (e: unknown) => e);
  await waitFor(() => server.requests.length === 1, 'AUTH to arrive');
  await new Promise((r) => setTimeout(r, 600)); // a wait that must pass: these calls start later, with time to spare
  const later = [c.getNextSequence(), c.getNextSequence(), c.getNextSequence()];
  const error = await early;
  assert.ok(error instanceof TimeoutError, String(error));
  assert.deepEqual(await Promise.all(later), [2n, 3n, 4n], 'the early call\'s late reply (1) was read and dropped');
  assert.equal(server.connections.length, 1, 'the connection was kept');
});

test('a full server (max clients) is not taken for a reply, with a password or without: the next server is tried, and the error says what happened', async () => {
  // What the server does over --max-connections: the error, unasked, then close.
  const fullServer = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.end('-ERR max number of clients reached\r\n');
  });
  await new Promise<void>((r) => fullServer.listen(0, '127.0.0.1', r));
  after(() => {
    fullServer.close();
  });
  const fullAddress = `127.0.0.1:${(fullServer.address() as net.AddressInfo).port}`;
  const healthy = await mock(counterScript());
  const c = client({ servers: [fullAddress, healthy.address], password: 'pw' });
  assert.equal(await c.getNextSequence(), 1n, 'served by the second server');
  const alone = client({ servers: [fullAddress], password: 'pw', requestTimeoutMs: 500 });
  const error = await alone.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NoServerAvailableError, String(error));
  assert.match(error.message, /max number of clients reached.*--max-connections/);

  // Without a password the first request is the one in flight when the refusal arrives.
  const open = client({ servers: [fullAddress, healthy.address] });
  assert.equal(await open.getNextSequence(), 2n, 'served by the second server');
  const openAlone = client({ servers: [fullAddress], requestTimeoutMs: 500, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
  const refused = await openAlone.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(refused instanceof ConnectionClosedError, String(refused));
  assert.equal(refused.requestSent, false, 'the server read nothing');
  assert.match(refused.message, /max number of clients reached.*--max-connections/);
});

test('close() gives up a connection attempt under way instead of waiting it out', async () => {
  // Accepts, and never answers AUTH: the attempt would last connectTimeoutMs.
  const server = await mock(() => {});
  const c = client({ servers: [server.address], password: 'pw', connectTimeoutMs: 5000, requestTimeoutMs: 300 });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NoServerAvailableError, String(error));
  const started = performance.now();
  await c.close();
  assert.ok(performance.now() - started < 1000, `close() took ${Math.round(performance.now() - started)} ms`);
});

test('error replies become ServerError with the wire code; NOAUTH says what to do', async () => {
  const server = await mock((_words, connection) => connection.send('-NOAUTH Authentication required.\r\n'));
  const c = client({ servers: [server.address] });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof ServerError, String(error));
  assert.equal(error.wireCode, 'NOAUTH');
  assert.match(error.message, /password/);
});

test('a server that is shutting down or starting issued nothing: the call goes to another server, or tries again', async () => {
  const stopping = await mock((_words, connection) => connection.send('-ERR server is shutting down; retry on another server\r\n'));
  const serving = await mock(counterScript());
  const c = client({ servers: [stopping.address, serving.address] });
  assert.equal(await c.getNextSequence(), 1n);
  assert.deepEqual(stopping.requests, [['GETSEQ']]);
  // One server, starting: each refusal leaves the connection, and a try on a new one is served.
  let starting = 2;
  const counter = counterScript();
  const late = await mock((words, connection) => {
    if (starting-- > 0) connection.send('-ERR server is starting; retry shortly\r\n');
    else counter(words, connection);
  });
  const alone = client({ servers: [late.address], reconnect: { minDelayMs: 1, maxDelayMs: 5 } });
  assert.deepEqual(await alone.getBatch(3), { first: 1n, count: 3n });
  assert.equal(late.requests.length, 3);
  assert.equal(late.accepted, 3);
});

test('a server that stays shutting down: the call fails with its ServerError, after one try per server without reconnecting', async () => {
  const stopping = await mock((_words, connection) => connection.send('-ERR server is shutting down; retry on another server\r\n'));
  const once = client({ servers: [stopping.address], reconnect: false });
  const error = await once.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof ServerError, String(error));
  assert.equal(error.serverMessage, 'server is shutting down; retry on another server');
  assert.equal(stopping.requests.length, 1);
  const patient = client({ servers: [stopping.address], requestTimeoutMs: 300, reconnect: { minDelayMs: 5, maxDelayMs: 20 } });
  const late = await patient.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(late instanceof ServerError, String(late));
  assert.ok(stopping.requests.length > 2, 'tried again until the request timeout');
});

test('no server at all: NoServerAvailableError (a TimeoutError) at the request timeout', async () => {
  const port = await freePort();
  const c = client({ servers: [`127.0.0.1:${port}`], requestTimeoutMs: 300, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
  const started = performance.now();
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NoServerAvailableError, String(error));
  assert.ok(error instanceof TimeoutError);
  assert.match(error.message, /ECONNREFUSED/);
  assert.ok(performance.now() - started >= 250);
});

test('reconnect: false fails at once when no server answers', async () => {
  const port = await freePort();
  const c = client({ servers: [`127.0.0.1:${port}`], requestTimeoutMs: 5000, reconnect: false });
  const started = performance.now();
  await assert.rejects(c.ping(), NoServerAvailableError);
  assert.ok(performance.now() - started < 1000);
});

test('calls made while no server answers wait, and succeed once one does', async () => {
  const port = await freePort();
  let refused = 0;
  const refuser = net.createServer((socket) => {
    refused++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => refuser.listen(port, '127.0.0.1', resolve));
  const c = client({ servers: [`127.0.0.1:${port}`], requestTimeoutMs: 5000, reconnect: { minDelayMs: 10, maxDelayMs: 40 } });
  const call = c.ping();
  await waitFor(() => refused >= 3, 'three refused attempts');
  await new Promise<void>((resolve) => refuser.close(() => resolve()));
  const server = await startMockServer(counterScript(), { port });
  servers.push(server);
  await call;
  assert.equal(await c.current(), 1n);
});

test('TLS: the client verifies the server against the given CA', async () => {
  const { key, cert, ca } = await tlsFiles();
  const server = await mock(counterScript(), { tls: { key, cert } });
  const trusting = client({ servers: [server.address], tls: { ca } });
  assert.equal(await trusting.getNextSequence(), 1n);
  const untrusting = client({ servers: [server.address], tls: true, reconnect: false });
  const error = await untrusting.ping().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NoServerAvailableError, String(error));
  assert.match(error.message, /the TLS certificate of 127\.0\.0\.1:\d+ was not accepted \(.+\): give the CA that signed it as tls\.ca \(CLI: --tls-ca\)/);
  assert.doesNotMatch(error.message, /allow more time/, 'more time does not help against a certificate');
});

test('TLS: a certificate every server refuses ends the call after one round, not at its timeout', async () => {
  const { key, cert } = await tlsFiles();
  const a = await mock(counterScript(), { tls: { key, cert } });
  const b = await mock(counterScript(), { tls: { key, cert } });
  // Reconnecting, with a minute to spend: waiting cannot make the certificate acceptable.
  const untrusting = client({ servers: [a.address, b.address], tls: true, requestTimeoutMs: 60_000 });
  const error = await untrusting.ping().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NoServerAvailableError, String(error));
  assert.match(error.message, /the TLS certificate of 127\.0\.0\.1:\d+ was not accepted/);
  assert.deepEqual([a.accepted, b.accepted], [1, 1], 'each server was tried once');
});

test('TLS: a server whose certificate is refused is passed over for one that is accepted', async () => {
  const { key, cert, ca } = await tlsFiles();
  // Signed by a CA the client is not given.
  const [otherKey, otherCert] = await Promise.all([readFile(certs!.strangerKey), readFile(certs!.strangerCert)]);
  const refused = await mock(counterScript(), { tls: { key: otherKey, cert: otherCert } });
  const accepted = await mock(counterScript(), { tls: { key, cert } });
  const c = client({ servers: [refused.address, accepted.address], tls: { ca } });
  assert.equal(await c.getNextSequence(), 1n);
  assert.equal(refused.accepted, 1);
});

for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
  test(`TLS: a server that refuses this client's certificate with an alert, as OpenSSL does, fails the call after one round, not at its timeout (${maxVersion})`, async () => {
    const { key, cert, ca } = await tlsFiles();
    // Demands a client certificate and gets none. Under TLS 1.3 the alert comes after the
    // client's side of the handshake is done, so the request may be written; under 1.2, within it.
    const strict = await mock(counterScript(), { tls: { key, cert, ca, requestCert: true, rejectUnauthorized: true } });
    const c = client({ servers: [strict.address], tls: { ca, maxVersion }, requestTimeoutMs: 60_000 });
    const gaveUp = new Promise<'still retrying'>((r) => setTimeout(r, 10_000, 'still retrying').unref());
    const error = await Promise.race([c.getNextSequence().then(() => null, (e: unknown) => e), gaveUp]);
    assert.ok(error instanceof NoServerAvailableError, String(error));
    assert.match(
      error.message,
      /^every server refused this client's TLS certificate \(tried 127\.0\.0\.1:\d+\): 127\.0\.0\.1:\d+ refused this client's TLS certificate \(.*alert (certificate required|handshake failure).*\): set one signed by the CA the server trusts as tls\.cert and tls\.key \(CLI: --tls-cert, --tls-key\)\.$/,
    );
    assert.doesNotMatch(error.message, /safe to retry|allow more time/);
  });
}

/**
 * A server that refuses this client's certificate as dolmeangi's TLS port does: unasked, then it
 * closes. Plain TCP unless given TLS options (a test without them need not make certificates).
 * Past `refuseFirst` connections it answers `:7` to every request instead.
 */
async function certificateRefuser(tlsOptions?: tls.TlsOptions, refuseFirst = Infinity): Promise<{ address: string; accepted: () => number }> {
  let accepted = 0;
  const sockets: net.Socket[] = [];
  const refuse = (socket: net.Socket): void => {
    accepted++;
    sockets.push(socket);
    socket.on('error', () => {});
    if (accepted > refuseFirst) {
      socket.on('data', (data) => socket.write(':7\r\n'.repeat(data.toString('latin1').split('\r\n').length - 1)));
      return;
    }
    socket.resume();
    socket.end("-ERR client certificate not accepted (none presented): this port takes only valid certificates signed by the CA of the server's --tls-ca\r\n");
  };
  const server = tlsOptions === undefined ? net.createServer(refuse) : tls.createServer(tlsOptions, refuse);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  refusers.push(() => {
    server.close();
    for (const s of sockets) s.destroy();
  });
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, accepted: () => accepted };
}

test("a server's refusal of this client's certificate: the next server is tried, and when every server refused, the call fails at once, with a password or without", async () => {
  const [a, b] = [await certificateRefuser(), await certificateRefuser()];
  const healthy = await mock(counterScript());
  // One member set up with another CA: the call goes on to one that serves it.
  assert.equal(await client({ servers: [a.address, healthy.address] }).getNextSequence(), 1n);
  assert.equal(await client({ servers: [a.address, healthy.address], password: 'pw' }).getNextSequence(), 2n);
  assert.equal(a.accepted(), 2, 'tried once per client');
  for (const password of [undefined, 'pw']) {
    const c = client({ servers: [a.address, b.address], password, requestTimeoutMs: 60_000 });
    const gaveUp = new Promise<'still retrying'>((r) => setTimeout(r, 10_000, 'still retrying').unref());
    const error = await Promise.race([c.getNextSequence().then(() => null, (e: unknown) => e), gaveUp]);
    assert.ok(error instanceof NoServerAvailableError, `password ${password}: ${String(error)}`);
    assert.match(
      error.message,
      /^every server refused this client's TLS certificate \(tried 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+\): server replied: ERR client certificate not accepted \(none presented\): .*: set such a certificate and its key as tls\.cert and tls\.key \(CLI: --tls-cert, --tls-key\)\.$/,
    );
    assert.ok(error.cause instanceof ServerError, 'the cause is the server\'s refusal');
  }
});

test("servers that refuse this client's certificate in either way, an alert (TLS 1.2, an earlier build) and a reply: the call fails after one round", async () => {
  const { key, cert, ca } = await tlsFiles();
  const strict = await mock(counterScript(), { tls: { key, cert, ca, requestCert: true, rejectUnauthorized: true } });
  const replying = await certificateRefuser({ key, cert });
  for (const servers of [[strict.address, replying.address], [replying.address, strict.address]]) {
    const c = client({ servers, tls: { ca, maxVersion: 'TLSv1.2' }, requestTimeoutMs: 60_000 });
    const gaveUp = new Promise<'still retrying'>((r) => setTimeout(r, 10_000, 'still retrying').unref());
    const error = await Promise.race([c.getNextSequence().then(() => null, (e: unknown) => e), gaveUp]);
    await c.close();
    assert.ok(error instanceof NoServerAvailableError, `${servers.join(', ')}: ${String(error)}`);
    assert.match(error.message, /^every server refused this client's TLS certificate \(tried 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+\): /);
  }
});

test("one server refuses this client's certificate, the other presents one this client rejects: the call fails at once, naming each problem", async () => {
  const { key, cert, ca } = await tlsFiles();
  const strict = await mock(counterScript(), { tls: { key, cert, ca, requestCert: true, rejectUnauthorized: true } });
  const [otherKey, otherCert] = await Promise.all([readFile(certs!.strangerKey), readFile(certs!.strangerCert)]);
  const stranger = await mock(counterScript(), { tls: { key: otherKey, cert: otherCert } });
  const c = client({ servers: [strict.address, stranger.address], tls: { ca }, requestTimeoutMs: 60_000 });
  const gaveUp = new Promise<'still retrying'>((r) => setTimeout(r, 10_000, 'still retrying').unref());
  const error = await Promise.race([c.getNextSequence().then(() => null, (e: unknown) => e), gaveUp]);
  assert.ok(error instanceof NoServerAvailableError, String(error));
  assert.match(error.message, /^every server refused this client's TLS certificate or presented one this client does not accept \(tried /);
  assert.match(error.message, /refused this client's TLS certificate \(.*\): set one signed by the CA/);
  assert.match(error.message, /the TLS certificate of 127\.0\.0\.1:\d+ was not accepted/);
});

test("a leader, named by a member that serves this client, that refuses this client's certificate: NotLeaderError says so after its second refusal, not at the deadline", async () => {
  const refuser = await certificateRefuser();
  for (const password of [undefined, 'pw']) {
    const follower = await mock((words, connection) => connection.send(words[0] === 'AUTH' ? '+OK\r\n' : `-NOTLEADER ${refuser.address}\r\n`));
    const c = client({ servers: [follower.address], password, requestTimeoutMs: 30_000, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
    const before = refuser.accepted();
    const started = performance.now();
    const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
    const tookMs = performance.now() - started;
    assert.ok(error instanceof NotLeaderError, `password ${password}: ${String(error)}`);
    assert.equal(error.leader, refuser.address);
    assert.match(error.message, /^the leader, 127\.0\.0\.1:\d+, refused this client's TLS certificate: server replied: ERR client certificate not accepted \(none presented\)/);
    assert.match(error.message, /; 127\.0\.0\.1:\d+ names it, so calls fail until that is fixed or another member leads$/);
    // Two tries of the leader, a backoff step apart: a leader that changed in between would have served.
    assert.equal(refuser.accepted() - before, 2, `password ${password}`);
    assert.ok(tookMs < 15_000, `password ${password}: gave up after ${Math.round(tookMs)} ms, at the deadline`);
  }
});

test("a leader, named by a member that serves this client, whose TLS certificate this client does not accept: NotLeaderError says so, not at the deadline", async () => {
  const { key, cert, ca } = await tlsFiles();
  const [strangerKey, strangerCert] = await Promise.all([readFile(certs!.strangerKey), readFile(certs!.strangerCert)]);
  const leader = await mock(counterScript(), { tls: { key: strangerKey, cert: strangerCert } });
  const follower = await mock((_words, connection) => connection.send(`-NOTLEADER ${leader.address}\r\n`), { tls: { key, cert } });
  const c = client({ servers: [follower.address], tls: { ca }, requestTimeoutMs: 30_000, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
  const started = performance.now();
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  const tookMs = performance.now() - started;
  assert.ok(error instanceof NotLeaderError, String(error));
  assert.match(error.message, /^the leader, 127\.0\.0\.1:\d+, presented a TLS certificate this client does not accept: the TLS certificate of 127\.0\.0\.1:\d+ was not accepted \(/);
  assert.ok(tookMs < 15_000, `gave up after ${Math.round(tookMs)} ms, at the deadline`);
});

test("a leader that refuses this client's certificate at first and then serves it (another member took over at that address): served", async () => {
  const leader = await certificateRefuser(undefined, 1);
  const follower = await mock((_words, connection) => connection.send(`-NOTLEADER ${leader.address}\r\n`));
  const c = client({ servers: [follower.address], requestTimeoutMs: 5000, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
  assert.equal(await c.getNextSequence(), 7n);
});

test("a server that is down beside one that refuses this client's certificate: the call keeps trying the one that may come up until its timeout", async () => {
  const refuser = await certificateRefuser();
  const down = `127.0.0.1:${await freePort()}`;
  for (const password of [undefined, 'pw']) {
    const c = client({ servers: [down, refuser.address], password, requestTimeoutMs: 1500, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
    const before = refuser.accepted();
    const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
    // At the deadline: no server reached, or the last try's request timed out.
    assert.ok(error instanceof TimeoutError, `password ${password}: ${String(error)}`);
    assert.doesNotMatch(error.message, /every server refused/, 'one was down, not refusing');
    // Paced by the backoff: about one try per step (10-50 ms), not thousands in a tight loop.
    assert.ok(refuser.accepted() - before < 200, `password ${password}: ${refuser.accepted() - before} tries of the refusing server in 1.5 s`);
  }
});

test('a server that never answers AUTH: NoServerAvailableError whose message quotes the cause once, without a doubled period', async () => {
  const server = await mock(() => {});
  const c = client({ servers: [server.address], password: 'pw', connectTimeoutMs: 300, requestTimeoutMs: 2000, reconnect: false });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NoServerAvailableError, String(error));
  assert.match(error.message, /no reply to AUTH/);
  // AUTH has what is left of connectTimeoutMs, whatever requestTimeoutMs is.
  assert.match(error.message, /within the connect timeout: .*raise connectTimeoutMs\./);
  assert.doesNotMatch(error.message, /raise requestTimeoutMs/);
  assert.doesNotMatch(error.message, /\.\./);
});

test('connectTimeoutMs covers the TLS handshake and AUTH together', async () => {
  const { key, cert, ca } = await tlsFiles();
  // Each step alone fits in the 1000 ms; the two together do not.
  const server = await mock(
    (words, connection) => {
      if (words[0] === 'AUTH') setTimeout(() => connection.send('+OK\r\n'), 600);
      else connection.send(':1\r\n');
    },
    { tls: { key, cert }, handshakeDelayMs: 600 },
  );
  const c = client({ servers: [server.address], tls: { ca }, password: 'pw', connectTimeoutMs: 1000, requestTimeoutMs: 5000, reconnect: false });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof NoServerAvailableError, String(error));
  assert.ok(error.cause instanceof TimeoutError, String(error.cause));
  assert.equal(server.requests.length, 1, 'only AUTH was sent');
});

test('close() waits for a connection left for the leader while a request on it is still answered', async () => {
  const leader = await mock(counterScript(10n));
  const follower = await mock((words, connection) => {
    // The follower is slow to answer CURRENT, quick to redirect GETSEQ.
    if (words[0] === 'CURRENT') setTimeout(() => connection.send(':5\r\n'), 300);
    else connection.send(`-NOTLEADER ${leader.address}\r\n`);
  });
  const c = client({ servers: [follower.address] });
  // Pipelined in this order, so the follower's replies keep the order of the requests.
  const next = c.getNextSequence();
  const current = watch(c.current());
  assert.equal(await next, 10n, 'redirected to the leader');
  assert.equal(current.settled(), false, 'CURRENT still waits on the follower');
  await c.close();
  assert.ok(current.settled(), 'close() resolved before the request on the retired connection was answered');
  assert.equal(await current.result, 5n);
  await waitFor(() => follower.connections[0]!.socket.destroyed, 'the follower connection to be closed');
});

test('close() after a call that timed out alone does not wait for its reply from a server that never sends it', async () => {
  const server = await mock((words, connection) => {
    // AUTH takes most of the call's time, so its timeout keeps the connection; GETSEQ is never answered.
    if (words[0] === 'AUTH') setTimeout(() => connection.send('+OK\r\n'), 950);
  });
  const c = client({ servers: [server.address], password: 'pw', requestTimeoutMs: 1000 });
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof TimeoutError, String(error));
  let closed = false;
  void c.close().then(() => (closed = true));
  await waitFor(() => closed, 'close() to finish');
  await waitFor(() => server.connections[0]!.socket.readableEnded || server.connections[0]!.socket.destroyed, 'the server to see the close');
});

test('close(): later calls fail with ConnectionClosedError and the socket is closed', async () => {
  const server = await mock(counterScript());
  const c = new SequencerClient({ servers: [server.address] });
  assert.equal(await c.getNextSequence(), 1n);
  await c.close();
  await waitFor(() => server.connections[0]!.socket.readableEnded || server.connections[0]!.socket.destroyed, 'the server to see the close');
  const error = await c.getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(error instanceof ConnectionClosedError, String(error));
  assert.equal(error.requestSent, false);
});

test('a sequence name the server would refuse is refused here, and nothing is sent', async () => {
  const server = await mock(counterScript());
  const c = client({ servers: [server.address] });
  // Over the server's word limit such a name would be a protocol error that closes the connection under every call on it.
  const huge = 'n'.repeat(70_000);
  await assert.rejects(c.getNextSequence('a b'), (err: unknown) => err instanceof RangeError && /invalid sequence name 'a b': use 1-64 characters/.test(err.message));
  await assert.rejects(c.current(huge), (err: unknown) => err instanceof RangeError && err.message.length < 200);
  await assert.rejects(c.getBatch(5, ''), RangeError);
  assert.throws(() => c.allocator({ name: 'x/y' }), RangeError);
  assert.equal(server.requests.length, 0);
  assert.equal(await c.getNextSequence('orders:eu-1.v2_x'), 1n);
  assert.deepEqual(server.requests, [['GETSEQ', 'orders:eu-1.v2_x']]);
});

test('arguments of the wrong type from JavaScript are refused before anything is sent, and later calls get their own replies', async () => {
  const server = await mock(counterScript());
  const c = client({ servers: [server.address] });
  assert.equal(await c.getNextSequence(), 1n);
  // Without types a number slips by a length check: (5).length is undefined.
  const untyped = c as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  await assert.rejects(untyped.current!(5), (err: unknown) => err instanceof TypeError && /sequence name must be a string, got number/.test(err.message));
  await assert.rejects(untyped.getNextSequence!(Symbol('s')), TypeError);
  await assert.rejects(untyped.getBatch!(2, { name: 'x' }), TypeError);
  for (const count of ['x', null, true, '10']) {
    await assert.rejects(untyped.getBatch!(count), (err: unknown) => err instanceof TypeError && /count must be a number or a bigint/.test(err.message), String(count));
  }
  assert.throws(() => c.allocator({ name: 42 as unknown as string }), TypeError);
  assert.deepEqual(server.requests, [['GETSEQ']]);
  // Each call gets the reply to its own request: none was queued without being sent.
  assert.deepEqual(await Promise.all([c.getNextSequence(), c.current()]), [2n, 3n]);
  assert.equal(await c.getNextSequence(), 3n);
});

test('a request that cannot be encoded is never queued: the requests after it on the connection get their own replies', async () => {
  const server = await mock(counterScript());
  const connection = await Connection.open({ host: '127.0.0.1', port: server.port }, { tls: null, connectTimeoutMs: 1000 });
  try {
    await assert.rejects(connection.send(['CURRENT', 5 as unknown as string], 1000), TypeError);
    const replies = await Promise.all([connection.send(['GETSEQ'], 1000), connection.send(['CURRENT'], 1000)]);
    assert.deepEqual(replies, [{ type: 'integer', value: 1n }, { type: 'integer', value: 2n }]);
  } finally {
    connection.destroy();
    await connection.closed;
  }
});

test('a connection closed before its newest request was written says that one was not sent, and the one before it may have been', async () => {
  const server = await mock(() => {}); // reads, never answers
  const connection = await Connection.open({ host: '127.0.0.1', port: server.port }, { tls: null, connectTimeoutMs: 1000 });
  const sent = connection.send(['GETSEQ'], 5000).catch((e: unknown) => e);
  await waitFor(() => server.requests.length === 1, 'the first request to reach the server');
  // Queued for the next tick's write, then the socket goes in this one.
  const unsent = connection.send(['GETSEQ'], 5000).catch((e: unknown) => e);
  connection.destroy();
  // Destroyed, not yet closed: refused at once.
  assert.equal(connection.usable, false);
  const late = connection.send(['GETSEQ'], 5000).catch((e: unknown) => e);
  await connection.closed;
  const [first, second, third] = await Promise.all([sent, unsent, late]);
  for (const e of [first, second, third]) assert.ok(e instanceof ConnectionClosedError, String(e));
  assert.equal((first as ConnectionClosedError).requestSent, true);
  assert.equal((second as ConnectionClosedError).requestSent, false, 'never written: safe to send again');
  assert.equal((third as ConnectionClosedError).requestSent, false);
  assert.equal(server.requests.length, 1);
});

test('tls: false is plain TCP', async () => {
  const server = await mock(counterScript(5n));
  // From JavaScript without types, false must not be taken as TLS options.
  const c = client({ servers: [server.address], tls: false });
  assert.equal(await c.getNextSequence(), 5n);
});

test('bad options are refused up front', () => {
  assert.throws(() => new SequencerClient({ servers: ['no port:x'] }), /servers/);
  assert.throws(() => new SequencerClient({ servers: [] }), /servers/);
  assert.throws(() => new SequencerClient({ requestTimeoutMs: 0 }), /requestTimeoutMs/);
  // Node's timers would fire such a delay after 1 ms.
  assert.throws(() => new SequencerClient({ requestTimeoutMs: 2 ** 31 }), /requestTimeoutMs.*up to 2147483647/);
  assert.throws(() => new SequencerClient({ connectTimeoutMs: 1e10 }), /connectTimeoutMs/);
  // A dead server would be retried in a tight loop.
  assert.throws(() => new SequencerClient({ reconnect: { minDelayMs: 0 } }), /reconnect.*minDelayMs 0/);
  assert.throws(() => new SequencerClient({ reconnect: { minDelayMs: 500, maxDelayMs: 100 } }), /reconnect/);
  assert.throws(() => new SequencerClient({ reconnect: { maxDelayMs: Number.NaN } }), /reconnect/);
  assert.doesNotThrow(() => new SequencerClient({ reconnect: { minDelayMs: 1, maxDelayMs: 1 } }));
  // No server reads a longer word; the connection would be dropped at every attempt.
  assert.throws(() => new SequencerClient({ password: 'p'.repeat(65_537) }), /password.*65536 bytes/);
  assert.throws(() => new SequencerClient({ password: 'é'.repeat(32_769) }), /password/);
  assert.doesNotThrow(() => new SequencerClient({ password: 'p'.repeat(65_536) }));
});

test('an allocator over a client: many numbers, few round trips', async () => {
  const server = await mock(counterScript());
  const c = client({ servers: [server.address] });
  const allocator = c.allocator({ batch: 1000 });
  let last = 0n;
  for (let i = 0; i < 20_000; i++) {
    const n = allocator.tryNext() ?? (await allocator.next());
    assert.ok(n > last);
    last = n;
  }
  assert.ok(server.requests.length <= 21, `${server.requests.length} requests`);
});

test('a server that accepts but never answers is left for the next one after a timeout', async () => {
  // What a paused (SIGSTOP) server looks like: its kernel still completes the TCP handshake.
  const frozen = await mock(() => {});
  const live = await mock(counterScript(42n));
  const c = client({ servers: [frozen.address, live.address], requestTimeoutMs: 300 });
  await assert.rejects(c.getNextSequence(), TimeoutError);
  assert.equal(await c.getNextSequence(), 42n);
  assert.equal(await c.getNextSequence(), 43n);
});
