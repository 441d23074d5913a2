/**
 * The operations port of a real server process: exact counters after a known
 * workload, the content type, /healthz, and /readyz following storage as it
 * breaks and recovers.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { runCli, startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { WireClient, resp } from '../helpers/wire.js';
import { parseMetrics, request } from '../helpers/http.js';
import { eventually } from '../helpers/wait.js';
import { freePort } from '../helpers/ports.js';
import { VERSION } from '../../src/version.js';

const servers: ServerProcess[] = [];
const clients: WireClient[] = [];
const dirs: string[] = [];

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(servers.map((s) => s.kill()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(tmpdir(), 'dolmeangi-metrics-'));
  dirs.push(d);
  return d;
}

/** A server with the operations port on; resolves with it and that port. */
async function start(args: string[]): Promise<{ server: ServerProcess; http: string }> {
  const server = await startServerProcess([`--metrics-port=${await freePort()}`, ...args]);
  servers.push(server);
  const listening = server.logs.find((l) => l.msg === 'listening')!;
  assert.equal(typeof listening.metricsPort, 'number', 'the listening line names the metrics port');
  return { server, http: `http://127.0.0.1:${listening.metricsPort}` };
}

async function connect(port: number): Promise<WireClient> {
  const c = await WireClient.connect(port);
  clients.push(c);
  return c;
}

const replies = (text: string) => text.split('\r\n').length - 1;

async function scrape(http: string): Promise<Map<string, number>> {
  const r = await request(`${http}/metrics`);
  assert.equal(r.status, 200);
  return parseMetrics(r.body);
}

test('counters are exact after a known workload; a batch of 100 counts 100', async () => {
  const dir = await tempDir();
  const { server, http } = await start([`--data-dir=${dir}/data`, '--reserve=0']);
  const c = await connect(server.port);
  const allocations = ['GETSEQ\r\n', 'GETSEQ\r\n', resp('GETSEQ'), 'GETSEQ_BATCH 100 orders\r\n', 'GETSEQ orders\r\n'];
  c.send(allocations.join(''));
  await c.expect(':1\r\n:2\r\n:3\r\n:1\r\n:101\r\n');
  c.reset();
  // Apart from the allocations: pipelined behind replies that wait for storage, CURRENT would read the value before them.
  const others = [resp('CURRENT', 'orders'), 'PING\r\n', 'FOOBAR\r\n', 'GETSEQ_BATCH 0 orders\r\n', 'AUTH nope\r\n', 'getseq bad/name\r\n'];
  c.send(others.join(''));
  await c.until((t) => replies(t) === others.length, 5000, `${others.length} replies`);
  assert.match(c.text, /^:102\r\n\+PONG\r\n-ERR Unknown command 'FOOBAR'.*\r\n-ERR invalid count.*\r\n-ERR AUTH called.*\r\n-ERR invalid sequence name.*\r\n$/);

  const m = await scrape(http);
  const expected: Record<string, number> = {
    'dolmeangi_issued_numbers_total{sequence="default"}': 3,
    'dolmeangi_issued_numbers_total{sequence="orders"}': 101,
    'dolmeangi_requests_total{command="getseq"}': 5,
    'dolmeangi_requests_total{command="current"}': 1,
    'dolmeangi_requests_total{command="getseq_batch"}': 2,
    'dolmeangi_requests_total{command="ping"}': 1,
    'dolmeangi_requests_total{command="info"}': 0,
    'dolmeangi_requests_total{command="auth"}': 1,
    'dolmeangi_requests_total{command="quit"}': 0,
    'dolmeangi_requests_total{command="unknown"}': 1,
    'dolmeangi_errors_total{code="ERR"}': 4,
    'dolmeangi_sequence_next{sequence="default"}': 4,
    'dolmeangi_sequence_next{sequence="orders"}': 102,
    'dolmeangi_sequence_durable_mark{sequence="orders"}': 102,
    'dolmeangi_sequence_remaining{sequence="orders"}': Number(2n ** 63n - 102n),
    'dolmeangi_sequences': 2,
    'dolmeangi_connections': 1,
    'dolmeangi_connections_accepted_total': 1,
    'dolmeangi_connections_rejected_total': 0,
    'dolmeangi_accept_errors_total': 0,
    'dolmeangi_tls_certificate_refusals_total': 0,
    'dolmeangi_output_limit_disconnects_total': 0,
    'dolmeangi_persist_failures_total': 0,
    'dolmeangi_auth_failures_total': 0,
    'dolmeangi_ops_connections_refused_total': 0,
    'dolmeangi_ready': 1,
    'dolmeangi_persistence_up': 1,
    'dolmeangi_max_connections': 1000,
    [`dolmeangi_build_info{version="${VERSION}",mode="durable"}`]: 1,
  };
  for (const [series, value] of Object.entries(expected)) assert.equal(m.get(series), value, series);
  assert.deepEqual([...m.keys()].filter((k) => k.startsWith('dolmeangi_errors_total')), ['dolmeangi_errors_total{code="ERR"}']);
  assert.equal(m.has('dolmeangi_leader'), false, 'no leader gauge outside group mode');
  // --reserve=0: each of the 5 requests that took numbers waited for a write of its own or a shared one.
  const writes = m.get('dolmeangi_persist_duration_seconds_count')!;
  assert.ok(writes >= 1 && writes <= 5, `persist writes: ${writes}`);
  assert.ok(m.get('dolmeangi_request_chunk_duration_seconds_count')! >= 1);
  assert.ok(m.has('process_cpu_user_seconds_total'), 'default process metrics');

  c.send('QUIT\r\n');
  await c.waitClosed();
  const again = await eventually('the closed connection to leave the gauge', async () => {
    const s = await scrape(http);
    return s.get('dolmeangi_connections') === 0 ? s : undefined;
  });
  assert.equal(again.get('dolmeangi_requests_total{command="quit"}'), 1);
  assert.equal(again.get('dolmeangi_issued_numbers_total{sequence="orders"}'), 101, 'scraping twice does not double counters');
});

test('the HTTP endpoints: content type, /healthz, 404 and 405', async () => {
  const { http } = await start(['--in-memory']);
  const metrics = await request(`${http}/metrics`);
  assert.equal(metrics.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  assert.match(metrics.body, /^# HELP dolmeangi_issued_numbers_total /m);
  assert.match(metrics.body, /^# TYPE dolmeangi_issued_numbers_total counter$/m);
  assert.match(metrics.body, /^# TYPE dolmeangi_persist_duration_seconds histogram$/m);

  const health = await request(`${http}/healthz`);
  assert.deepEqual([health.status, health.body], [200, 'ok\n']);
  const ready = await request(`${http}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal((await request(`${http}/metrics?x=1`)).status, 200, 'a query string is ignored');
  assert.equal((await request(`${http}/nope`)).status, 404);
  const post = await request(`${http}/metrics`, 'POST');
  assert.equal(post.status, 405);
  assert.equal(post.headers.allow, 'GET, HEAD');
  assert.equal((await request(`${http}/healthz`, 'HEAD')).status, 200);
});

test('during a clean stop, /healthz still answers 200 and /readyz 503 shutting down, until the process exits', async () => {
  const { server, http } = await start(['--in-memory', '--client-output-limit=104857600']);
  // It does not read: 30 MB of replies owed to it, more than loopback buffers hold, keep the drain waiting for it.
  const lingering = net.connect({ port: server.port, host: '127.0.0.1' });
  lingering.on('error', () => {});
  const client = WireClient.wrap(lingering);
  clients.push(client);
  lingering.pause();
  client.send(resp('PING', 'p'.repeat(60_000)).repeat(500));
  // Once the kernel's buffers are full the server stops reading it, with replies still unsent.
  let last = -1;
  await eventually('the server to stop reading the client that does not read', async () => {
    const pings = Number(/dolmeangi_requests_total\{command="ping"\} (\d+)/.exec((await request(`${http}/metrics`)).body)?.[1] ?? 0);
    const still = pings === last && pings > 0 && pings < 500;
    last = pings;
    return still ? true : undefined;
  });
  const exited = server.stop('SIGTERM');
  const ready = await eventually('/readyz to say the server is shutting down', async () => {
    const r = await request(`${http}/readyz`);
    return r.status === 503 ? r : undefined;
  });
  assert.match(ready.body, /shutting down/);
  assert.deepEqual([(await request(`${http}/healthz`)).status, (await request(`${http}/healthz`)).body], [200, 'ok\n']);
  assert.equal(server.child.exitCode, null, 'still draining the lingering client');
  lingering.destroy();
  assert.equal(await exited, 0);
});

test('/readyz: 200, then 503 with the reason while storage fails, then 200 after it recovers', async () => {
  const dir = await tempDir();
  const data = path.join(dir, 'data');
  const { server, http } = await start([`--data-dir=${data}`, '--reserve=0']);
  const c = await connect(server.port);
  c.send('GETSEQ\r\n');
  await c.expect(':1\r\n');
  const ok = await request(`${http}/readyz`);
  assert.deepEqual([ok.status, ok.body], [200, 'ready: serving\n']);

  // Writes fail below the server: the directory is gone and a file stands in its way
  // (chmod would not stop root).
  await rename(data, `${data}.away`);
  await writeFile(data, 'not a directory');
  c.reset();
  c.send('GETSEQ\r\n');
  await c.until((t) => replies(t) === 1);
  assert.match(c.text, /^-ERR persistence unavailable: .*\r\n$/);
  const down = await request(`${http}/readyz`);
  assert.equal(down.status, 503);
  assert.match(down.body, /^not ready: persistence unavailable: .*ENOTDIR/);
  const failing = await scrape(http);
  assert.equal(failing.get('dolmeangi_ready'), 0);
  assert.equal(failing.get('dolmeangi_persistence_up'), 0);
  assert.ok(failing.get('dolmeangi_persist_failures_total')! >= 1);
  assert.equal(failing.get('dolmeangi_issued_numbers_total{sequence="default"}'), 1, 'the refused request issued nothing');
  const failed = await server.waitForLog((l) => l.level === 50 && /^persistence failing/.test(String(l.msg)));
  assert.match(String(failed.err), /ENOTDIR/);

  await rm(data);
  await rename(`${data}.away`, data);
  // The core retries with backoff (at most 5 s apart); it needs no request to recover.
  await eventually('/readyz to answer 200 again', async () => ((await request(`${http}/readyz`)).status === 200 ? true : undefined), 15_000);
  const recovered = await server.waitForLog((l) => l.msg === 'persistence recovered');
  assert.equal(recovered.level, 40);
  assert.equal(typeof recovered.downForMs, 'number');
  const back = await scrape(http);
  assert.equal(back.get('dolmeangi_ready'), 1);
  assert.equal(back.get('dolmeangi_persistence_up'), 1);
  c.reset();
  c.send('GETSEQ\r\n');
  await c.expect(':2\r\n');
  assert.equal(await server.stop(), 0);
});

test('a metrics port in use stops start-up with a clear message', async () => {
  const { http } = await start(['--in-memory']);
  const busy = Number(new URL(http).port);
  const r = await runCli(['sequencer', '--in-memory', '--host=127.0.0.1', '--port=0', `--metrics-port=${busy}`]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^dolmeangi: cannot listen for metrics on 127\\.0\\.0\\.1:${busy}: the address is already in use`));
});

test('--metrics-port=0 turns the operations port off', async () => {
  const server = await startServerProcess(['--in-memory']);
  servers.push(server);
  assert.equal(server.logs.find((l) => l.msg === 'listening')!.metricsPort, null);
});
