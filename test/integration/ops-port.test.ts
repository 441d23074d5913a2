/**
 * The operations port under load it should shrug off: many scrapes at once, many
 * idle connections, a request that never finishes its headers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { MAX_OPS_CONNECTIONS, MAX_OPS_CONNECTIONS_PER_PEER, MAX_OPS_PIPELINED, startOpsServer } from '../../src/http/server.js';
import { waitFor } from '../helpers/wait.js';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
  });
}

/** Metrics whose render the test finishes by hand, counting how often it was asked. */
function heldMetrics() {
  let finish: (text: string) => void = () => {};
  const m = {
    renders: 0,
    contentType: 'text/plain; version=0.0.4',
    render(): Promise<string> {
      m.renders++;
      return new Promise<string>((resolve) => (finish = resolve));
    },
    finish: (text: string) => finish(text),
  };
  return m;
}

async function start(t: import('node:test').TestContext, metrics = heldMetrics(), stalledMs?: number) {
  const counts = { refused: 0 };
  const ops = await startOpsServer({
    host: '127.0.0.1',
    port: 0,
    metrics,
    readiness: () => ({ ready: true, reason: 'serving' }),
    refused: () => counts.refused++,
    ...(stalledMs === undefined ? {} : { stalledMs }),
  });
  t.after(() => ops.close());
  return { ops, metrics, counts };
}

function connectIdle(port: number, localAddress: string): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  s.on('error', () => {});
  s.resume(); // so that the server's FIN is seen
  return once(s, 'connect').then(() => s);
}

test('scrapes that arrive while one is rendered share its text: one render for a burst', async (t) => {
  const { ops, metrics } = await start(t);
  // Twenty requests in one write on one connection: the server parses them all in one go.
  const s = net.connect({ host: '127.0.0.1', port: ops.port });
  t.after(() => s.destroy());
  let received = '';
  s.setEncoding('latin1').on('data', (d: string) => (received += d));
  s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(20));
  await waitFor(() => metrics.renders > 0, 'the first render');
  await new Promise((r) => setImmediate(r));
  metrics.finish('x 1\n');
  await waitFor(() => received.split('HTTP/1.1 200').length - 1 === 20, 'twenty answers');
  assert.equal(received.split('\r\n\r\nx 1\n').length - 1, 20, 'each with the one text');
  assert.equal(metrics.renders, 1);
  // Once done, the next scrape renders afresh.
  const next = get(ops.port, '/metrics');
  await waitFor(() => metrics.renders === 2, 'a new render');
  metrics.finish('x 2\n');
  assert.equal((await next).body, 'x 2\n');
});

test(`one peer holds at most ${MAX_OPS_CONNECTIONS_PER_PEER} connections, others still get in; one that never sends its headers is closed within seconds`, async (t) => {
  const { ops, counts } = await start(t);
  const idle: net.Socket[] = [];
  t.after(() => idle.forEach((s) => s.destroy()));
  for (let i = 0; i < MAX_OPS_CONNECTIONS_PER_PEER + 10; i++) idle.push(await connectIdle(ops.port, '127.0.0.1'));
  const closed = () => idle.filter((s) => s.destroyed || s.readableEnded).length;
  // The ones past the cap are closed at once, and counted.
  await waitFor(() => closed() >= 10, 'the connections past the cap to be closed', 5000);
  assert.equal(counts.refused, 10);
  // Meanwhile a probe from another address (as a kubelet's would be) is answered.
  const probe = await new Promise<number>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: ops.port, path: '/healthz', localAddress: '127.0.0.2', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      })
      .on('error', reject);
  });
  assert.equal(probe, 200);
  assert.equal(closed(), 10, 'the first ones are still held');
  // The rest sent nothing: the header timeout (5 s, checked every second) closes them too.
  const started = performance.now();
  await waitFor(() => closed() === idle.length, 'the idle connections to be closed', 10_000);
  assert.ok(performance.now() - started < 8000, 'not left to Node\'s 30 s check');
  assert.equal((await get(ops.port, '/healthz')).status, 200, 'the port serves again');
});

test(`past ${MAX_OPS_CONNECTIONS} connections in all, the next is closed and counted`, async (t) => {
  const { ops, counts } = await start(t);
  const held: net.Socket[] = [];
  t.after(() => held.forEach((s) => s.destroy()));
  // From as many loopback addresses as it takes, each within the limit per peer; all at
  // once, well inside the 5 s the port gives a connection to send its headers.
  const connects: Promise<net.Socket>[] = [];
  for (let i = 0; i < MAX_OPS_CONNECTIONS; i++) {
    connects.push(connectIdle(ops.port, `127.0.1.${1 + Math.floor(i / MAX_OPS_CONNECTIONS_PER_PEER)}`));
  }
  held.push(...(await Promise.all(connects)));
  assert.equal(counts.refused, 0);
  const extra = await connectIdle(ops.port, '127.0.2.1');
  held.push(extra);
  await waitFor(() => extra.destroyed || extra.readableEnded, 'the connection past the cap to be closed', 5000);
  assert.equal(counts.refused, 1);
  assert.ok(held.slice(0, MAX_OPS_CONNECTIONS).every((s) => !s.destroyed && !s.readableEnded), 'the others are still held');
});

test('a render that never ends fails its scrape after 10 s, and the next scrape renders afresh', async (t) => {
  const { ops, metrics } = await start(t);
  // Taken before the request, so the time measured is never less than the render's.
  const started = performance.now();
  const first = get(ops.port, '/metrics');
  await waitFor(() => metrics.renders === 1, 'the first render');
  assert.equal((await first).status, 500);
  const waited = performance.now() - started;
  // Not sooner: a slow registry under load must get its 10 s (timers may fire a millisecond early).
  assert.ok(waited >= 9_990 && waited < 20_000, `failed after ${Math.round(waited)} ms`);
  const next = get(ops.port, '/metrics');
  await waitFor(() => metrics.renders === 2, 'a second render', 5000);
  metrics.finish('x 2\n');
  assert.equal((await next).body, 'x 2\n');
});

test(`a connection with more than ${MAX_OPS_PIPELINED} requests waiting for their replies is closed and counted`, async (t) => {
  const { ops, metrics, counts } = await start(t);
  const s = net.connect({ host: '127.0.0.1', port: ops.port });
  s.on('error', () => {});
  s.resume();
  await once(s, 'connect');
  const scrape = 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n';
  // Held by the unfinished render: every one of them waits.
  s.write(scrape.repeat(MAX_OPS_PIPELINED));
  await waitFor(() => metrics.renders === 1, 'the first scrape to be rendered');
  const waitingTooLong = setTimeout(() => s.destroy(), 10_000);
  s.write(scrape.repeat(10));
  await once(s, 'close');
  clearTimeout(waitingTooLong);
  assert.equal(counts.refused, 1, 'closed by the server, not by the test\'s deadline');
  metrics.finish('m 1\n');
  assert.equal((await get(ops.port, '/healthz')).status, 200, 'others are served as before');
});

test('a connection whose replies wait unsent, none of them taken, is closed, though its client keeps sending', async (t) => {
  // Twelve replies of 1 MiB: more than loopback buffers hold, so the server's writes stall.
  const big = 'm ' + 'x'.repeat(1 << 20) + '\n';
  const { ops, counts } = await start(t, { renders: 0, contentType: 'text/plain', render: async () => big } as unknown as ReturnType<typeof heldMetrics>, 500);
  const s = net.connect({ host: '127.0.0.1', port: ops.port });
  s.on('error', () => {});
  await once(s, 'connect');
  s.pause();
  s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(12));
  // Blank lines, which HTTP allows between requests: the server keeps reading them, and a
  // write after it closed fails, so the closed connection shows without reading.
  const trickle = setInterval(() => s.write('\r\n'), 50);
  t.after(() => clearInterval(trickle));
  await waitFor(() => s.destroyed, 'the stalled connection to be closed', 10_000);
  assert.equal(counts.refused, 1);
  assert.equal((await get(ops.port, '/healthz')).status, 200, 'others are served as before');
});

test('a request line in absolute form (as some proxies send it) reaches the same paths', async (t) => {
  const { ops } = await start(t);
  const s = net.connect({ host: '127.0.0.1', port: ops.port });
  t.after(() => s.destroy());
  let received = '';
  s.setEncoding('latin1').on('data', (d: string) => (received += d));
  s.write(`GET http://127.0.0.1:${ops.port}/healthz?probe=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  await once(s, 'end');
  assert.match(received, /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nok\n$/);
});
