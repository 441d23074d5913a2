/**
 * A real Prometheus scrapes a real server and sees the exact count of numbers
 * handed out, and evaluates the shipped alert rules against its data without
 * error; promtool accepts the rules, their unit tests and the example config.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT, startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { WireClient } from '../helpers/wire.js';
import { request } from '../helpers/http.js';
import { eventually } from '../helpers/wait.js';
import { freePort } from '../helpers/ports.js';

const PROMETHEUS_DIR = path.join(ROOT, 'deploy/prometheus');

/** The parts of Prometheus's HTTP API answers that the test reads. */
type QueryAnswer = { data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
type RulesAnswer = { data: { groups: Array<{ rules: Array<{ name: string; query: string; health: string; lastError?: string }> }> } };
const INSTALL = 'apt-get install -y prometheus';

function requireTool(name: string): void {
  const found = spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
  assert.ok(found, `${name} is not on PATH; install it with: ${INSTALL}`);
}

function promtool(args: string[], cwd = PROMETHEUS_DIR): { status: number | null; output: string } {
  requireTool('promtool');
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('promtool check rules accepts deploy/prometheus/alerts.yml', () => {
  const r = promtool(['check', 'rules', 'deploy/prometheus/alerts.yml'], ROOT);
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, /SUCCESS: \d+ rules found/);
});

test('the alert rules pass their unit tests (promtool test rules)', () => {
  const r = promtool(['test', 'rules', 'alerts_test.yml']);
  assert.equal(r.status, 0, r.output);
});

test('promtool check config accepts the example prometheus.yml', () => {
  const r = promtool(['check', 'config', 'prometheus.yml']);
  assert.equal(r.status, 0, r.output);
});

let server: ServerProcess | null = null;
let prometheus: ChildProcess | null = null;
let prometheusExited: Promise<unknown> = Promise.resolve();
let dir: string | null = null;

after(async () => {
  if (prometheus !== null && prometheus.exitCode === null && prometheus.signalCode === null) {
    prometheus.kill('SIGKILL');
    await prometheusExited;
  }
  await server?.kill();
  if (dir !== null) await rm(dir, { recursive: true, force: true });
});

test('Prometheus scrapes dolmeangi_issued_numbers_total exactly and evaluates every alert rule', async () => {
  requireTool('prometheus');
  dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-prometheus-'));
  server = await startServerProcess([`--metrics-port=${await freePort()}`, '--in-memory']);
  const metricsPort = Number(server.logs.find((l) => l.msg === 'listening')!.metricsPort);
  const c = await WireClient.connect(server.port);
  try {
    c.send('GETSEQ_BATCH 100\r\nGETSEQ\r\nGETSEQ\r\nGETSEQ_BATCH 5 other\r\n');
    await c.expect(':1\r\n:101\r\n:102\r\n:1\r\n');
  } finally {
    c.close();
  }

  const config = path.join(dir, 'prometheus.yml');
  await writeFile(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${JSON.stringify(path.join(PROMETHEUS_DIR, 'alerts.yml'))}`,
      'scrape_configs:',
      '  - job_name: dolmeangi',
      '    static_configs:',
      `      - targets: ['127.0.0.1:${metricsPort}']`,
      '',
    ].join('\n'),
  );
  const webPort = await freePort();
  const api = `http://127.0.0.1:${webPort}`;
  const child = spawn(
    'prometheus',
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${webPort}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  prometheus = child;
  prometheusExited = new Promise((resolve) => child.once('exit', resolve));
  let prometheusOutput = '';
  const keep = (d: Buffer) => {
    prometheusOutput = (prometheusOutput + d.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);

  const query = async (promql: string) => {
    if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${prometheusOutput}`);
    const r = await request(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`);
    if (r.status !== 200) return undefined;
    return (JSON.parse(r.body) as QueryAnswer).data.result;
  };

  const issued = await eventually(
    'Prometheus to report the issued numbers',
    async () => {
      const result = await query('dolmeangi_issued_numbers_total');
      return result !== undefined && result.length === 2 ? result : undefined;
    },
    30_000,
    250,
  );
  const bySequence = Object.fromEntries(issued.map((r) => [r.metric.sequence, r.value[1]]));
  assert.deepEqual(bySequence, { default: '102', other: '5' });
  assert.equal(issued[0]!.metric.job, 'dolmeangi');

  // Every rule evaluated at least once, against this data, without an error.
  const rules = await eventually(
    'every alert rule to be evaluated',
    async () => {
      const r = await request(`${api}/api/v1/rules`);
      if (r.status !== 200) return undefined;
      const all = (JSON.parse(r.body) as RulesAnswer).data.groups.flatMap((g) => g.rules);
      return all.length > 0 && all.every((rule) => rule.health !== 'unknown') ? all : undefined;
    },
    30_000,
    250,
  );
  for (const rule of rules) {
    assert.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError ?? ''}`);
    // Now that the server has been scraped, no condition may hold (the `for:` delays would hide it).
    assert.deepEqual(await query(rule.query), [], `${rule.name} on a healthy server`);
  }
});
