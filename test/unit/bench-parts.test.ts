/**
 * The bench's own arithmetic and parsing: figures published in docs/benchmarks.md
 * come from these, and a swapped column or an inverted ratio would look plausible.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRedisBenchmark } from '../../src/bench/redis-benchmark.js';
import { cpuSeconds } from '../../src/bench/proc.js';
import { median, ratiosOf, type MatrixRow, type Results } from '../../src/bench/results.js';
import { renderDocs } from '../../src/bench/docs.js';

// Printed by redis-benchmark 7.0 with --csv, and without it (progress lines redrawn with CR).
const CSV = [
  '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"',
  '"GETSEQ","62500.00","0.068","0.008","0.031","0.103","1.431","2.383"',
  '',
].join('\n');
const SUMMARY = [
  'GETSEQ: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\rGETSEQ: rps=61000.0 (overall: 61000.0)',
  '99.650% <= 1.807 milliseconds (cumulative count 1993)',
  '',
  'Summary:',
  '  throughput summary: 68965.52 requests per second',
  '  latency summary (msec):',
  '          avg       min       p50       p95       p99       max',
  '        0.058     0.008     0.031     0.047     1.463     2.503',
  '',
].join('\n');

test('redis-benchmark output: each figure from its own column, in CSV and in the summary', () => {
  assert.deepEqual(parseRedisBenchmark(CSV), { rps: 62500, avgMs: 0.068, p50Ms: 0.031, p99Ms: 1.431, maxMs: 2.383 });
  assert.deepEqual(parseRedisBenchmark(SUMMARY), { rps: 68965.52, avgMs: 0.058, p50Ms: 0.031, p99Ms: 1.463, maxMs: 2.503 });
  // Columns are found by name, not position.
  const reordered = ['"test","rps","p99_latency_ms","p50_latency_ms","avg_latency_ms","max_latency_ms"', '"X","100","3","2","1","4"'].join('\n');
  assert.deepEqual(parseRedisBenchmark(reordered), { rps: 100, avgMs: 1, p50Ms: 2, p99Ms: 3, maxMs: 4 });
  // Nothing usable is a failure, never a zero.
  assert.equal(parseRedisBenchmark(''), null);
  assert.equal(parseRedisBenchmark(CSV.replace('"62500.00"', '"0.00"')), null);
  assert.equal(parseRedisBenchmark(CSV.replace('"1.431"', '"nan"')), null);
});

test('ratios: requests/s over the baseline (above 1 is faster), CPU per request over the baseline (below 1 is cheaper)', () => {
  const row = (server: MatrixRow['server'], clients: number, rps: number, cpuUsPerRequest: number) =>
    ({ server, clients, pipeline: 1, rps, cpuUsPerRequest }) as MatrixRow;
  const ratios = ratiosOf([
    row('dolmeangi-memory', 50, 200_000, 4),
    row('redis', 50, 100_000, 8),
    row('dolmeangi-reserve0', 50, 50_000, 12),
    row('redis-aof-always', 50, 60_000, 10),
    row('dolmeangi-memory', 1, 10_000, 20), // no Redis row at -c 1: no ratio
  ]);
  const at = (server: string) => ratios.filter((r) => r.server === server);
  assert.deepEqual(
    at('dolmeangi-memory').map((r) => [r.baseline, r.clients, r.rps, r.cpu]),
    [['redis', 50, 2, 0.5]],
  );
  assert.deepEqual(
    at('dolmeangi-reserve0').map((r) => [r.baseline, r.rps, r.cpu]),
    [['redis-aof-always', 50_000 / 60_000, 1.2]],
  );
});

test('median of odd and even counts, whatever the order', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([7]), 7);
});

test('CPU seconds of a process read from /proc agree with what the process itself counts', () => {
  const before = cpuSeconds(process.pid);
  const own = process.cpuUsage();
  const until = performance.now() + 300;
  let x = 0;
  while (performance.now() < until) x += Math.sqrt(x + 1);
  const used = process.cpuUsage(own);
  const fromProc = cpuSeconds(process.pid) - before;
  const fromNode = (used.user + used.system) / 1e6;
  assert.ok(x > 0);
  // /proc counts in ticks of 10 ms; allow a few for the reads themselves.
  assert.ok(Math.abs(fromProc - fromNode) < 0.05, `/proc says ${fromProc} s, the process ${fromNode} s`);
});

test('a page rendered from a smoke run, or a run with errors or failed count checks, says it is not valid', () => {
  const base = {
    format: 1,
    date: '2026-01-01T00:00:00.000Z',
    mode: 'full',
    smoke: false,
    settings: { secondsPerRun: 5, idleConnections: 1000 },
    machine: { cores: 2, cpuModel: 'cpu', memoryBytes: 1 << 30, kernel: 'linux' },
    versions: { node: 'v20', dolmeangi: '0.1.0', redis: null, redisBenchmark: '7', etcd: null },
    dataFilesystem: 'ext4',
    matrix: [],
    ratios: [],
    batch: [],
    metrics: [],
    idle: [],
    client: [],
    group: [],
    verified: [{ server: 'dolmeangi --in-memory', expected: '11', actual: '11', ok: true }],
    skipped: [],
    errors: [],
  } as unknown as Results;
  const files = { docs: '/x/docs/benchmarks.md', chart: '/x/bench/results/latest.svg', json: '/x/bench/results/latest.json', analysis: null };
  assert.doesNotMatch(renderDocs(base, files), /not valid/);
  assert.match(renderDocs({ ...base, smoke: true }, files), /This run is not valid[\s\S]*smoke mode/);
  assert.match(renderDocs({ ...base, errors: ['redis -c 50 -P 1: exit 1'] }, files), /This run is not valid[\s\S]*failed: redis -c 50 -P 1: exit 1/);
  const miscounted = { ...base, verified: [{ server: 'dolmeangi --in-memory', expected: '11', actual: '5', ok: false }] };
  assert.match(renderDocs(miscounted, files), /This run is not valid[\s\S]*expected 11, found 5/);
});
