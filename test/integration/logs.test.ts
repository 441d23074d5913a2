/**
 * What a real server process logs: one line at start with what an operator
 * needs, nothing per request, failed AUTHs rate-limited with a count, and the
 * shutdown. (Storage failure and recovery lines: metrics.test.ts.)
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CLI, startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { WireClient } from '../helpers/wire.js';
import { parseMetrics, request } from '../helpers/http.js';
import { freePort, freePorts } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { VERSION } from '../../src/version.js';

const servers: ServerProcess[] = [];
const clients: WireClient[] = [];
const dirs: string[] = [];
const kills: Array<() => Promise<void>> = [];

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(kills.map((k) => k()));
  await Promise.all(servers.map((s) => s.kill()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function connect(port: number): Promise<WireClient> {
  const c = await WireClient.connect(port);
  clients.push(c);
  return c;
}

test('one line at start with version, ports and data directory; none per request; the shutdown', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-logs-'));
  dirs.push(dir);
  const metricsPort = await freePort();
  const server = await startServerProcess([`--metrics-port=${metricsPort}`, `--data-dir=${dir}/data`, '--reserve=10']);
  servers.push(server);
  assert.equal(server.logs.length, 1, `only the start line: ${JSON.stringify(server.logs)}`);
  const start = server.logs[0]!;
  assert.equal(start.msg, 'listening');
  assert.equal(start.level, 30);
  assert.equal(start.version, VERSION);
  assert.equal(start.port, server.port);
  assert.equal(start.metricsPort, metricsPort);
  assert.equal(start.tlsPort, null);
  assert.equal(start.host, '127.0.0.1');
  assert.equal(start.mode, 'durable');
  assert.equal(start.dataDir, path.join(dir, 'data'));
  assert.equal(start.reserve, '10');
  assert.equal(start.leanReads, true, 'this Node.js reads clients through the lean path (socket-reads.ts)');
  for (const option of ['initial', 'maxConnections', 'maxBatch', 'maxSequences', 'timeout', 'auth']) {
    assert.ok(option in start, `the start line has ${option}`);
  }

  // Enough requests to cross several reservation windows, on several connections.
  const conns = await Promise.all([1, 2, 3].map(() => connect(server.port)));
  for (const c of conns) c.send('GETSEQ\r\nCURRENT\r\nGETSEQ_BATCH 7\r\nPING\r\nNOSUCH\r\n'.repeat(100));
  for (const c of conns) await c.until((t) => t.split('\r\n').length - 1 === 500, 10_000, '500 replies');
  assert.equal((await request(`http://127.0.0.1:${metricsPort}/metrics`)).status, 200);
  assert.equal(server.logs.length, 1, `no line per request or scrape: ${JSON.stringify(server.logs.slice(1, 4))}`);

  assert.equal(await server.stop(), 0);
  const shutdown = server.logs.slice(1).map((l) => l.msg);
  assert.deepEqual(shutdown, ['signal received', 'shutting down: no new connections, answering requests already read', 'stored the exact next numbers', 'stopped']);
});

test('failed AUTHs: at most one line per 10 s, with the count; counted in the metrics', async () => {
  const metricsPort = await freePort();
  const server = await startServerProcess([`--metrics-port=${metricsPort}`, '--in-memory', '--requirepass=s3cret-pw']);
  servers.push(server);
  const c = await connect(server.port);
  c.send('AUTH wrong\r\n'.repeat(5));
  await c.expect('-WRONGPASS invalid password\r\n'.repeat(5));
  const isAuthLine = (l: Record<string, unknown>) => l.msg === 'AUTH with a wrong password';
  const first = await server.waitForLog(isAuthLine);
  assert.equal(first.level, 40);
  assert.equal(first.count, 1, 'the first failure is logged at once');

  const m = parseMetrics((await request(`http://127.0.0.1:${metricsPort}/metrics`)).body);
  assert.equal(m.get('dolmeangi_auth_failures_total'), 5);
  assert.equal(m.get('dolmeangi_errors_total{code="WRONGPASS"}'), 5);
  assert.equal(server.logs.filter(isAuthLine).length, 1, 'the other four wait for the end of the 10 s window');

  // Stopping reports what the window held rather than dropping it.
  assert.equal(await server.stop(), 0);
  const lines = server.logs.filter(isAuthLine);
  assert.deepEqual(lines.map((l) => l.count), [1, 4]);
  assert.ok(!JSON.stringify(server.logs).includes('s3cret-pw'), 'the password is never logged');
});

/** A server whose stdout is `stdout` (its port given, as no "listening" line can be read), and its stderr. */
async function startWithStdout(stdout: 'pipe' | number) {
  const [port] = await freePorts(1);
  const child = spawn(process.execPath, [CLI, 'sequencer', '--in-memory', '--host=127.0.0.1', `--port=${port}`, '--metrics-port=0'], {
    stdio: ['ignore', stdout, 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  kills.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, port: port!, exited, stderr: () => stderr };
}

/** Waits until the server answers PING on a fresh connection. */
async function answersPing(port: number): Promise<void> {
  await waitFor(async () => {
    const c = await WireClient.connect(port).catch(() => null);
    if (c === null) return false;
    try {
      await c.exchange('PING\r\n', '+PONG\r\n', 2000);
      return true;
    } finally {
      c.close();
    }
  }, 'the server to answer PING', 10_000);
}

test('a stdout that cannot be written (a full disk) costs the log, not the service: it serves, says so on stderr, and stops on SIGTERM', async () => {
  const full = openSync('/dev/full', 'w');
  const s = await startWithStdout(full).finally(() => closeSync(full));
  await answersPing(s.port);
  const c = await connect(s.port);
  await c.exchange('GETSEQ\r\nGETSEQ\r\n', ':1\r\n:2\r\n');
  c.close();
  assert.match(s.stderr(), /^dolmeangi: cannot write the log to standard output \(ENOSPC\); serving on, and log lines are lost until it can be written again\n$/);
  s.child.kill('SIGTERM');
  assert.equal(await s.exited, 0);
});

test('a stdout whose reader went away: the server serves, says so once on stderr, and stops on SIGTERM', async () => {
  const s = await startWithStdout('pipe');
  s.child.stdout!.destroy();
  await answersPing(s.port);
  s.child.kill('SIGTERM');
  assert.equal(await s.exited, 0);
  assert.match(s.stderr(), /^dolmeangi: cannot write the log to standard output \(EPIPE\); serving on, and nobody reads it any more, so nothing more is logged\n$/);
});
