/**
 * `dolmeangi bench --smoke`: the whole bench pipeline with tiny counts. Checks
 * that every expected row, file and check is there; never what the numbers
 * are, which on a shared CI machine mean nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli, type ProgramResult } from '../helpers/server-process.js';
import {
  BATCH_SERVERS,
  BATCH_SIZES,
  COMPARISONS,
  GROUP_CELLS,
  METRICS_CELLS,
  SERVERS,
  matrixCells,
  type Results,
  type ServerId,
} from '../../src/bench/results.js';

const hasRedisBenchmark = spawnSync('redis-benchmark', ['--version']).status === 0;
const hasEtcd = spawnSync('etcd', ['--version']).status === 0;

/** Runs the CLI; on the deadline it sends SIGTERM, which makes the bench kill every server it started. */
function runBench(args: string[], timeoutMs: number): Promise<ProgramResult> {
  return runCli(['bench', ...args], { timeoutMs, killSignal: 'SIGTERM' });
}

test('bench --smoke runs every part and saves JSON, chart and page', async () => {
  assert.ok(hasRedisBenchmark, "redis-benchmark not found on PATH: install it with 'apt-get install -y redis-tools redis-server' (Debian)");
  assert.ok(hasEtcd, "etcd not found on PATH (the bench measures group mode with it): install it with 'apt-get install -y etcd-server' (Debian)");
  const dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-bench-test-'));
  try {
    const docs = path.join(dir, 'benchmarks.md');
    // Starts etcd and waits for a group leader too: allow for slow starts on a busy machine.
    const r = await runBench(['--smoke', `--out=${dir}`, `--docs=${docs}`], 240_000);
    assert.equal(r.code, 0, `exit code; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);

    const results = JSON.parse(await readFile(path.join(dir, 'latest.json'), 'utf8')) as Results;
    assert.equal(results.smoke, true);
    assert.equal(results.mode, 'full');
    assert.deepEqual(results.errors, []);
    const redis = results.versions.redis !== null;
    const servers = (Object.keys(SERVERS) as ServerId[]).filter((id) => redis || SERVERS[id].kind === 'dolmeangi');

    for (const server of servers) {
      for (const cell of matrixCells()) {
        const rows = results.matrix.filter((m) => m.server === server && m.clients === cell.clients && m.pipeline === cell.pipeline);
        assert.equal(rows.length, 1, `one matrix row for ${server} -c ${cell.clients} -P ${cell.pipeline}`);
        const row = rows[0]!;
        for (const key of ['rps', 'cpuUsPerRequest', 'p50Ms', 'p99Ms', 'rssBytes'] as const) {
          assert.equal(typeof row[key], 'number', `${server} ${key} is a number`);
        }
      }
    }
    if (redis) {
      for (const c of COMPARISONS) {
        for (const cell of matrixCells()) {
          assert.ok(
            results.ratios.some((x) => x.server === c.server && x.baseline === c.baseline && x.clients === cell.clients && x.pipeline === cell.pipeline),
            `ratio ${c.server} / ${c.baseline} at -c ${cell.clients} -P ${cell.pipeline}`,
          );
        }
      }
    } else {
      assert.ok(results.skipped.some((s) => s.startsWith('redis')), 'says why Redis is missing');
    }
    for (const server of BATCH_SERVERS.filter((id) => servers.includes(id))) {
      for (const size of BATCH_SIZES) {
        const row = results.batch.find((b) => b.server === server && b.size === size);
        assert.ok(row, `batch row for ${server} size ${size}`);
        assert.equal(typeof row.numbersPerSecond, 'number');
      }
    }
    for (const metrics of ['off', 'on'] as const) {
      for (const cell of METRICS_CELLS) {
        assert.ok(
          results.metrics.some((m) => m.metrics === metrics && m.clients === cell.clients && m.pipeline === cell.pipeline),
          `metrics ${metrics} at -c ${cell.clients} -P ${cell.pipeline}`,
        );
      }
    }
    assert.ok(results.metrics.filter((m) => m.metrics === 'on').every((m) => m.served), 'GET /metrics answered while "on"');
    assert.deepEqual(results.idle.map((i) => i.server).sort(), (redis ? ['dolmeangi-memory', 'redis'] : ['dolmeangi-memory']).sort());
    assert.deepEqual(results.client.map((c) => c.mode), ['sequential', 'pipelined', 'allocator']);
    for (const cell of GROUP_CELLS) {
      for (const role of ['leader', 'single'] as const) {
        const rows = (results.group ?? []).filter((g) => g.role === role && g.clients === cell.clients && g.pipeline === cell.pipeline);
        assert.equal(rows.length, 1, `one group-mode row for the ${role} at -c ${cell.clients} -P ${cell.pipeline}`);
        assert.equal(typeof rows[0]!.rps, 'number');
      }
    }
    assert.equal(typeof results.versions.etcd, 'string', 'the etcd version is recorded');
    // Each matrix server, the durable default with metrics off and on, and the group leader and the single node it is compared with.
    assert.equal(results.verified.length, servers.length + 4, 'every server checked');
    assert.ok(results.verified.some((v) => v.server === 'dolmeangi group leader'), 'the group leader is checked');
    for (const v of results.verified) assert.ok(v.ok, `${v.server}: every request took its numbers (expected ${v.expected}, got ${v.actual})`);

    assert.match(await readFile(path.join(dir, 'latest.svg'), 'utf8'), /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"[\s\S]*<\/svg>\n$/);
    const page = await readFile(docs, 'utf8');
    assert.match(page, /^# Benchmarks/);
    assert.match(page, /latest\.svg/);
    assert.match(page, /\| server +\| +-c \| +-P \| +req\/s \|/);
    assert.match(r.stdout, /dolmeangi --in-memory/);
    assert.match(page, /## Group mode/);
    assert.match(page, /This run is not valid[\s\S]*smoke mode/, 'a smoke run\'s page says its figures mean nothing');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('bench --help and a bad option', async () => {
  const help = await runBench(['--help'], 10_000);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--quick/);
  const bad = await runBench(['--seconds=fast'], 10_000);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--seconds: expected a number/);
});
