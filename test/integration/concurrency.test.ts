/**
 * Many clients at once: every number handed out exactly once, none skipped
 * while the process runs, batches never overlap.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServerProcess } from '../helpers/server-process.js';
import { WireClient } from '../helpers/wire.js';
import { freePort } from '../helpers/ports.js';
import { parseMetrics, request } from '../helpers/http.js';

/** Parses `:n\r\n` replies; fails on anything else. */
function integers(text: string): bigint[] {
  const lines = text.split('\r\n');
  assert.equal(lines.pop(), '');
  return lines.map((l) => {
    assert.match(l, /^:\d+$/);
    return BigInt(l.slice(1));
  });
}

/** Runs the load; `after` gets the server's metrics URL once every reply is checked. */
async function hundredClients(args: string[], after?: (metrics: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-conc-'));
  const metricsPort = await freePort();
  const dataDir = args.includes('--in-memory') ? [] : [`--data-dir=${dir}`];
  const s = await startServerProcess([...dataDir, `--metrics-port=${metricsPort}`, ...args]);
  const clients: WireClient[] = [];
  try {
    for (let i = 0; i < 100; i++) clients.push(await WireClient.connect(s.port));
    const request = 'GETSEQ\r\n'.repeat(1000);
    for (const c of clients) c.send(request);
    const all: bigint[] = [];
    for (const c of clients) {
      await c.until((t) => t.split('\r\n').length > 1000, 30_000, '1,000 replies');
      const got = integers(c.text);
      assert.equal(got.length, 1000);
      for (let i = 1; i < got.length; i++) assert.ok(got[i]! > got[i - 1]!, 'increasing within a connection');
      all.push(...got);
    }
    all.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    assert.equal(all.length, 100_000);
    for (let i = 0; i < all.length; i++) assert.equal(all[i], BigInt(i + 1), 'exactly 1..100000, no duplicate, no gap');
    await after?.(`http://127.0.0.1:${metricsPort}/metrics`);
    for (const c of clients) c.close();
    assert.equal(await s.stop(), 0, 'a clean stop');
  } finally {
    // After a failure above: stop without asserting, so that failure is the one reported.
    for (const c of clients) c.close();
    await s.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

test('100 connections x 1,000 pipelined GETSEQ: exactly 100,000 consecutive numbers (in memory)', () =>
  hundredClients(['--in-memory']));

// A window of 10,000, not the default 100,000, which would hold the whole load: here the load
// outgrows its windows, and thousands of requests at a time wait for a reservation that covers them.
test('the same with durable state, requests waiting for reservations under the load', () =>
  hundredClients(['--reserve=10000'], async (metrics) => {
    const m = parseMetrics((await request(metrics)).body);
    const writes = m.get('dolmeangi_persist_duration_seconds_count');
    assert.ok(writes !== undefined && writes >= 2, `${writes} reservation writes for 100,000 numbers`);
    // The window in use is --reserve's: the default one would have reserved past 150,000 by now.
    const mark = m.get('dolmeangi_sequence_durable_mark{sequence="default"}');
    assert.ok(mark !== undefined && mark <= 100_001 + 10_000, `durable mark ${mark}`);
  }));

test('the same in the gapless mode (--reserve=0), where requests that arrive together share one commit', () =>
  hundredClients(['--reserve=0'], async (metrics) => {
    const commits = parseMetrics((await request(metrics)).body).get('dolmeangi_persist_duration_seconds_count');
    assert.ok(commits !== undefined && commits >= 1, 'commits are counted');
    // One commit per request would be 100,000; group commit shares each among many.
    assert.ok(commits < 10_000, `${commits} commits for 100,000 requests`);
  }));

test('GETSEQ_BATCH mixed with GETSEQ over many connections: ranges never overlap', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-conc-'));
  const s = await startServerProcess([`--data-dir=${dir}`, '--reserve=1000']);
  const clients: WireClient[] = [];
  try {
    const ranges: Array<[bigint, bigint]> = [];
    const sizes: number[][] = [];
    for (let i = 0; i < 20; i++) {
      const c = await WireClient.connect(s.port);
      clients.push(c);
      const mine: number[] = [];
      let request = '';
      for (let j = 0; j < 200; j++) {
        const n = j % 3 === 0 ? 1 : 1 + ((i * 7919 + j * 104729) % 2500);
        mine.push(n);
        request += n === 1 && j % 2 === 0 ? 'GETSEQ mixed\r\n' : `GETSEQ_BATCH ${n} mixed\r\n`;
      }
      sizes.push(mine);
      c.send(request);
    }
    for (let i = 0; i < clients.length; i++) {
      const c = clients[i]!;
      await c.until((t) => t.split('\r\n').length > 200, 30_000, '200 replies');
      integers(c.text).forEach((first, j) => ranges.push([first, first + BigInt(sizes[i]![j]!)]));
    }
    ranges.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    assert.equal(ranges[0]![0], 1n);
    for (let i = 1; i < ranges.length; i++) {
      assert.equal(ranges[i]![0], ranges[i - 1]![1], 'each range starts where the previous ended: no overlap, no gap');
    }
    for (const c of clients) c.close();
    assert.equal(await s.stop(), 0, 'a clean stop');
  } finally {
    for (const c of clients) c.close();
    await s.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
