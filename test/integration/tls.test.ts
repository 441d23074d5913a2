/**
 * TLS beside plain TCP, against real server processes, with clients we did not
 * write (openssl s_client, redis-cli) as well as node's own: byte-for-byte
 * replies, one sequence across both ports, mutual TLS with --tls-ca, and
 * handshakes that never finish.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { runCli, runProgram, startServerProcess, type ProgramResult, type ServerProcess } from '../helpers/server-process.js';
import { WireClient, resp } from '../helpers/wire.js';
import { makeCerts, type TestCerts } from '../helpers/certs.js';
import { freePort } from '../helpers/ports.js';
import { parseMetrics, request } from '../helpers/http.js';
import { NoServerAvailableError, SequencerClient } from '../../src/index.js';

let certs: TestCerts;
let ca: Buffer;
const servers: ServerProcess[] = [];
const sockets: net.Socket[] = [];

const haveRedisCli = spawnSync('redis-cli', ['--help'], { encoding: 'utf8' }).stdout?.includes('--tls') === true;

async function start(args: string[]): Promise<{ server: ServerProcess; tlsPort: number }> {
  const server = await startServerProcess([
    '--in-memory',
    '--tls-port=0',
    `--tls-cert=${certs.serverCert}`,
    `--tls-key=${certs.serverKey}`,
    ...args,
  ]);
  servers.push(server);
  const tlsPort = Number(server.logs.find((l) => l.msg === 'listening')?.tlsPort);
  assert.ok(tlsPort > 0 && tlsPort !== server.port, 'the listening line names a TLS port of its own');
  return { server, tlsPort };
}

/** A TLS peer for byte-for-byte exchanges that trusts the test CA, closed after the tests if still open. */
async function tlsConnect(port: number, options: tls.ConnectionOptions = {}): Promise<WireClient> {
  const peer = await WireClient.connectTls(port, { ca, ...options });
  sockets.push(peer.socket);
  return peer;
}

/** Runs a program we did not write; its output is kept byte for byte (latin1). */
function runTool(cmd: string, args: string[], input: string, timeoutMs = 10_000): Promise<ProgramResult> {
  return runProgram(cmd, args, { input, timeoutMs, encoding: 'latin1' });
}

/** `-quiet` keeps s_client open after stdin ends, so each request list ends with QUIT. */
function sClient(port: number, input: string, extra: string[] = []) {
  return runTool('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-quiet', '-CAfile', certs.caCert, '-verify_return_error', '-servername', 'localhost', ...extra], input);
}

function redisCli(port: number, extra: string[], ...command: string[]) {
  return runTool('redis-cli', ['--tls', '--cacert', certs.caCert, '-h', '127.0.0.1', '-p', String(port), ...extra, ...command], '');
}

before(async () => {
  certs = await makeCerts();
  ca = fs.readFileSync(certs.caCert);
});

after(async () => {
  for (const s of sockets) s.destroy();
  const codes = await Promise.all(servers.map((s) => s.stop()));
  await certs?.remove();
  assert.deepEqual(codes, servers.map(() => 0), 'every server stops cleanly');
});

test('GETSEQ over TLS byte for byte; plain TCP and TLS share one sequence', async () => {
  const { server, tlsPort } = await start([]);
  const secure = await tlsConnect(tlsPort);
  assert.equal(secure.error, null);
  assert.equal((secure.socket as tls.TLSSocket).authorized, true, 'the server certificate verifies against the test CA');
  const plain = await WireClient.connect(server.port);
  try {
    await secure.exchange('GETSEQ\r\n', ':1\r\n');
    plain.send('GETSEQ\r\n');
    await plain.expect(':2\r\n');
    await secure.exchange(resp('GETSEQ') + resp('CURRENT') + 'PING\r\n', ':3\r\n:4\r\n+PONG\r\n');
    plain.reset();
    plain.send(resp('GETSEQ_BATCH', '10') + 'CURRENT\r\n');
    await plain.expect(':4\r\n:14\r\n');
    await secure.exchange('GETSEQ\r\n', ':14\r\n');
    await secure.exchange('QUIT\r\n', '+OK\r\n');
    await secure.until(() => secure.closed, 5000, 'the server to close after QUIT');
  } finally {
    plain.close();
  }
});

test('a TLS client that half-closes still gets every reply', async () => {
  const { tlsPort } = await start([]);
  const peer = await tlsConnect(tlsPort);
  peer.socket.end('GETSEQ half\r\nGETSEQ half\r\nCURRENT half\r\n');
  await peer.until(() => peer.closed, 5000, 'the server to close after answering');
  assert.equal(peer.text, ':1\r\n:2\r\n:3\r\n');
});

test('openssl s_client, a client we did not write, gets :n and the sequence continues across ports', async () => {
  const { server, tlsPort } = await start([]);
  const plain = await WireClient.connect(server.port);
  try {
    plain.send('GETSEQ\r\n');
    await plain.expect(':1\r\n');
    const r = await sClient(tlsPort, 'GETSEQ\r\nGETSEQ\r\nQUIT\r\n');
    assert.equal(r.stdout, ':2\r\n:3\r\n+OK\r\n', r.stderr);
    plain.reset();
    plain.send('GETSEQ\r\n');
    await plain.expect(':4\r\n');
  } finally {
    plain.close();
  }
});

test('redis-cli --tls prints (integer) n', async () => {
  assert.ok(haveRedisCli, "redis-cli with TLS support not found on PATH: install it with 'apt-get install -y redis-tools' (Debian 12 or later)");
  const { server, tlsPort } = await start([]);
  const a = await redisCli(tlsPort, ['--no-raw'], 'GETSEQ');
  assert.equal(a.stdout, '(integer) 1\n', a.stderr);
  const b = await redisCli(tlsPort, [], 'GETSEQ_BATCH', '5');
  assert.equal(b.stdout, '2\n', b.stderr);
  const plain = await WireClient.connect(server.port);
  try {
    plain.send('CURRENT\r\n');
    await plain.expect(':7\r\n');
  } finally {
    plain.close();
  }
  // redis-cli refuses a server whose certificate it cannot verify.
  const untrusted = await runTool('redis-cli', ['--tls', '--cacert', certs.strangerCert, '-h', '127.0.0.1', '-p', String(tlsPort), 'GETSEQ'], '');
  assert.doesNotMatch(untrusted.stdout, /^\d+\n$/);
});

const refusal = (why: string) =>
  `-ERR client certificate not accepted (${why}): this port takes only valid certificates signed by the CA of the server's --tls-ca\r\n`;

test('--tls-ca: a client without a certificate, or with one from another CA, is told why and closed, its requests unread; a signed one is served', async () => {
  const { server, tlsPort } = await start([`--tls-ca=${certs.caCert}`, `--metrics-port=${await freePort()}`]);
  const key = fs.readFileSync(certs.clientKey);
  const cert = fs.readFileSync(certs.clientCert);

  const anonymous = await tlsConnect(tlsPort);
  anonymous.socket.write('GETSEQ\r\n');
  await anonymous.until(() => anonymous.closed, 5000, 'the server to refuse a client without a certificate');
  assert.equal(anonymous.text, refusal('none presented'), 'the refusal alone: the GETSEQ is not answered');

  const stranger = await tlsConnect(tlsPort, { key: fs.readFileSync(certs.strangerKey), cert: fs.readFileSync(certs.strangerCert) });
  stranger.socket.write('GETSEQ\r\n');
  await stranger.until(() => stranger.closed, 5000, 'the server to refuse a certificate from another CA');
  assert.equal(stranger.text, refusal('UNABLE_TO_VERIFY_LEAF_SIGNATURE'));

  // The refused GETSEQs took no number.
  const trusted = await tlsConnect(tlsPort, { key, cert });
  await trusted.exchange('GETSEQ\r\n', ':1\r\n');

  const sNoCert = await sClient(tlsPort, 'GETSEQ\r\nQUIT\r\n');
  assert.equal(sNoCert.stdout, refusal('none presented'), 'openssl without a certificate gets the refusal, no number');
  const sCert = await sClient(tlsPort, 'GETSEQ\r\nQUIT\r\n', ['-cert', certs.clientCert, '-key', certs.clientKey]);
  assert.equal(sCert.stdout, ':2\r\n+OK\r\n', sCert.stderr);

  if (haveRedisCli) {
    const r = await redisCli(tlsPort, ['--cert', certs.clientCert, '--key', certs.clientKey], 'GETSEQ');
    assert.equal(r.stdout, '3\n', r.stderr);
    const refused = await redisCli(tlsPort, [], 'GETSEQ');
    assert.match(refused.stdout, /^ERR client certificate not accepted \(none presented\)/);
  }

  // Plain TCP on the same server is not behind the CA (bind it to a trusted network).
  const plain = await WireClient.connect(server.port);
  try {
    plain.send('GETSEQ\r\n');
    await plain.expect(haveRedisCli ? ':4\r\n' : ':3\r\n');
  } finally {
    plain.close();
  }

  // The command-line client, with a certificate and without one.
  const address = `localhost:${tlsPort}`;
  const withCert = await runCli(['getseq', '--server', address, '--tls-ca', certs.caCert, '--tls-cert', certs.clientCert, '--tls-key', certs.clientKey]);
  assert.deepEqual([withCert.code, withCert.stdout], [0, haveRedisCli ? '5\n' : '4\n'], withCert.stderr);
  const withoutCert = await runCli(['getseq', '--server', address, '--tls-ca', certs.caCert]);
  assert.equal(withoutCert.code, 1);
  const refused = `every server refused this client's TLS certificate (tried ${address}): server replied: ${refusal('none presented').slice(1, -2)}: set such a certificate and its key as tls.cert and tls.key (CLI: --tls-cert, --tls-key).`;
  assert.equal(withoutCert.stderr, `dolmeangi: ${refused}\n`);

  // The library, with a minute to spend, fails once the server has refused: retrying could not help.
  const library = new SequencerClient({ servers: [address], tls: { ca }, requestTimeoutMs: 60_000 });
  try {
    const gaveUp = new Promise<'still retrying'>((r) => setTimeout(r, 10_000, 'still retrying').unref());
    const error = await Promise.race([library.getNextSequence().then(() => null, (e: unknown) => e), gaveUp]);
    assert.ok(error instanceof NoServerAvailableError, String(error));
    assert.equal(error.message, refused);
  } finally {
    await library.close();
  }

  const metricsPort = Number(server.logs.find((l) => l.msg === 'listening')?.metricsPort);
  const metrics = parseMetrics((await request(`http://127.0.0.1:${metricsPort}/metrics`)).body);
  // Refused: the anonymous and the stranger sockets, s_client and the CLI without a certificate,
  // the library, and redis-cli without one when it is installed.
  assert.equal(metrics.get('dolmeangi_tls_certificate_refusals_total'), haveRedisCli ? 6 : 5, 'every refusal counted');
});

test('a TLS client over --max-connections gets the error over TLS', async () => {
  const { server, tlsPort } = await start(['--max-connections=1']);
  const holder = await WireClient.connect(server.port);
  try {
    holder.send('PING\r\n');
    await holder.expect('+PONG\r\n');
    const refused = await tlsConnect(tlsPort);
    await refused.until(() => refused.closed, 5000, 'the refusal');
    assert.equal(refused.text, '-ERR max number of clients reached\r\n');
  } finally {
    holder.close();
  }
});

/** Opens a raw TCP connection that never starts (or never finishes) a TLS handshake. */
function rawConnect(port: number): Promise<{ socket: net.Socket; closedAt: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve({ socket, closedAt: new Promise((r) => socket.once('close', () => r(Date.now()))) });
    });
    sockets.push(socket);
    socket.once('error', reject);
  });
}

test('a client that never finishes its TLS handshake is closed by the handshake timeout', async () => {
  // The handshake timeout is 10 s, or --timeout when that is shorter.
  const { tlsPort } = await start(['--timeout=1']);
  const t0 = Date.now();
  const silent = await rawConnect(tlsPort);
  const partial = await rawConnect(tlsPort);
  // The first bytes of a ClientHello record, then nothing.
  partial.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  const deadline = new Promise<number>((_, reject) => setTimeout(() => reject(new Error('not closed within 4 s')), 4000).unref());
  const [a, b] = await Promise.all([Promise.race([silent.closedAt, deadline]), Promise.race([partial.closedAt, deadline])]);
  for (const at of [a, b]) {
    assert.ok(at - t0 >= 800, `closed after ${at - t0} ms, not before the timeout`);
    assert.ok(at - t0 <= 3000, `closed after ${at - t0} ms`);
  }
  // The listener still serves real clients afterwards.
  const peer = await tlsConnect(tlsPort);
  await peer.exchange('PING\r\n', '+PONG\r\n');
});

test('a TLS client over --max-connections, all of them TLS, gets the error over TLS', async () => {
  const { tlsPort } = await start(['--max-connections=2']);
  const holders = [await tlsConnect(tlsPort), await tlsConnect(tlsPort)];
  for (const h of holders) await h.exchange('PING\r\n', '+PONG\r\n');
  const refused = await tlsConnect(tlsPort);
  await refused.until(() => refused.closed, 5000, 'the refusal');
  assert.equal(refused.text, '-ERR max number of clients reached\r\n');
  assert.equal(refused.error, null, 'refused after its handshake, not during it');
});

test('sockets stuck before their handshake are bounded by --max-connections + 16; plain TCP is unaffected', async () => {
  const { server, tlsPort } = await start(['--max-connections=5', '--timeout=30']);
  const stuck = await Promise.all(Array.from({ length: 5 + 16 }, () => rawConnect(tlsPort)));
  // One more is closed at once rather than holding memory until its handshake times out.
  const extra = await rawConnect(tlsPort);
  const closedIn = await Promise.race([extra.closedAt.then((at) => at - Date.now()), new Promise<null>((r) => setTimeout(() => r(null), 3000))]);
  assert.notEqual(closedIn, null, 'the connection past the cap was closed');
  const plain = await WireClient.connect(server.port);
  try {
    plain.send('GETSEQ\r\n');
    await plain.expect(':1\r\n');
  } finally {
    plain.close();
  }
  for (const s of stuck) s.socket.destroy();
  // Once they are gone, a real TLS client is served again.
  const deadline = Date.now() + 5000;
  for (;;) {
    const peer = await tlsConnect(tlsPort);
    if (peer.error === null && !peer.closed) {
      await peer.exchange('GETSEQ\r\n', ':2\r\n');
      break;
    }
    assert.ok(Date.now() < deadline, 'the TLS listener never accepted again');
    await new Promise((r) => setTimeout(r, 50));
  }
});

test('a TLS client that pipelines without reading is paused, and others are served meanwhile', async () => {
  const { server, tlsPort } = await start([]);
  const hog = await tlsConnect(tlsPort);
  hog.socket.pause();
  const chunk = Buffer.from('GETSEQ hog\r\n'.repeat(8192));
  const t0 = Date.now();
  let queued = 0;
  // Writes as fast as the connection takes them, for at most 3 s or 16 MB.
  while (Date.now() - t0 < 3000 && queued < 16 * 1024 * 1024 && !hog.closed) {
    if (hog.socket.writableLength < 1024 * 1024) {
      hog.socket.write(chunk);
      queued += chunk.length;
    } else {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const plain = await WireClient.connect(server.port);
  try {
    plain.send('GETSEQ\r\nCURRENT hog\r\n');
    await plain.until((t) => /^:1\r\n:\d+\r\n$/.test(t), 5000, 'answers while the hog is paused');
    const served = Number(/:(\d+)\r\n$/.exec(plain.text)![1]) - 1;
    const sent = queued / 12;
    assert.ok(served < sent, `the server stopped reading: it answered ${served} of ${sent} requests`);
  } finally {
    plain.close();
    hog.socket.destroy();
  }
});

test('a key that does not match the certificate stops start-up with status 2 and a line naming the files', async () => {
  // The client's key with the server's certificate: both valid PEM, not a pair.
  const r = await runCli(['sequencer', '--in-memory', '--host=127.0.0.1', '--port=0', '--metrics-port=0',
    '--tls-port=0', `--tls-cert=${certs.serverCert}`, `--tls-key=${certs.clientKey}`]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--tls-key: the key \(.*\) does not go with the certificate \(.*\): .*key values mismatch/);
  assert.ok(r.stderr.includes(certs.serverCert) && r.stderr.includes(certs.clientKey), r.stderr);
  const orphan = await runCli(['sequencer', '--in-memory', `--tls-key=${certs.serverKey}`]);
  assert.equal(orphan.code, 2);
  assert.match(orphan.stderr, /--tls-key: TLS files were given without --tls-port/);
});

test('--tls-ca: a refused client cannot come back with the session it was given, under TLS 1.3 or 1.2', async () => {
  const { tlsPort } = await start([`--tls-ca=${certs.caCert}`]);
  for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
    const first = await tlsConnect(tlsPort, { maxVersion });
    // TLS 1.2 offers its session in the handshake; 1.3 sends a ticket after it.
    let session: Buffer | undefined = (first.socket as tls.TLSSocket).getSession();
    first.socket.on('session', (s: Buffer) => (session = s));
    await first.until(() => first.closed, 5000, 'the refusal');
    assert.equal(first.text, refusal('none presented'));
    assert.ok(session !== undefined, `${maxVersion}: a session was offered to resume`);
    const again = await tlsConnect(tlsPort, { maxVersion, session });
    again.socket.write('GETSEQ\r\n');
    await again.until(() => again.closed, 5000, 'the refusal of the resumed session');
    // Node reports a resumed TLS 1.3 session authorized though it carries no certificate.
    assert.equal(again.text, refusal('none presented'), `${maxVersion}: refused again, nothing served`);
  }
  // A client that was accepted resumes its session and is served.
  let session: Buffer | undefined;
  const key = fs.readFileSync(certs.clientKey);
  const cert = fs.readFileSync(certs.clientCert);
  const trusted = await tlsConnect(tlsPort, { key, cert });
  trusted.socket.on('session', (s: Buffer) => (session = s));
  await trusted.exchange('GETSEQ\r\n', ':1\r\n');
  await trusted.until(() => session !== undefined, 5000, 'a session ticket');
  trusted.close();
  const resumed = await tlsConnect(tlsPort, { key, cert, session });
  assert.ok((resumed.socket as tls.TLSSocket).isSessionReused(), 'the session was resumed');
  await resumed.exchange('GETSEQ\r\n', ':2\r\n');
});

test('the TLS port refuses renegotiation: a certificate is checked once, after the first handshake', async () => {
  const { tlsPort } = await start([`--tls-ca=${certs.caCert}`]);
  const c = await tlsConnect(tlsPort, { maxVersion: 'TLSv1.2', key: fs.readFileSync(certs.clientKey), cert: fs.readFileSync(certs.clientCert) });
  await c.exchange('GETSEQ\r\n', ':1\r\n');
  const socket = c.socket as tls.TLSSocket;
  const outcome = new Promise<string>((resolve) => {
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(String(err.code)));
    socket.renegotiate({}, (err) => resolve(err === null ? 'renegotiated' : String((err as NodeJS.ErrnoException).code)));
    setTimeout(() => resolve('no answer within 5 s'), 5000).unref();
  });
  // The server answers with a no_renegotiation alert, and the session stays the one it checked.
  assert.equal(await outcome, 'ERR_SSL_NO_RENEGOTIATION');
  c.close();
});
