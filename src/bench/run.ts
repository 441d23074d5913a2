/**
 * The bench: starts the servers, measures them in turn cell by cell, checks
 * each handed out exactly the numbers asked for, stops them; then the parts
 * that need a server of their own; then prints the results and, when asked,
 * saves them (JSON, SVG chart, Markdown page). A part that fails is
 * recorded and the rest still runs; any failure makes the exit code 1.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { VERSION } from '../version.js';
import { renderChart } from './chart.js';
import { renderDocs } from './docs.js';
import { idleConnectionMemory } from './idle.js';
import { clientLibraryRates } from './library.js';
import { QuietBudget, measureLoad, type Plan } from './load.js';
import type { BenchOptions } from './options.js';
import { checkProcfs, filesystemType, machine } from './proc.js';
import { Progress } from './progress.js';
import { redisBenchmarkVersion } from './redis-benchmark.js';
import { textReport } from './report.js';
import { query, queryInteger } from './resp.js';
import {
  BATCH_CELL,
  BATCH_SERVERS,
  BATCH_SIZES,
  DISTURBED_PERCENT,
  GROUP_CELLS,
  GROUP_ROUNDS,
  METRICS_CELLS,
  QUICK_CELLS,
  SERVERS,
  cellName,
  matrixCells,
  ratiosOf,
  SERVER_ORDER,
  type BatchRow,
  type Cell,
  type ClientRow,
  type GroupRow,
  type IdleRow,
  type LoadRow,
  type MatrixRow,
  type MetricsRow,
  type Ratio,
  type Results,
  type ServerId,
  type ServerSpec,
  type Verification,
} from './results.js';
import {
  HOST,
  etcdVersion,
  freePort,
  installCleanup,
  redisVersion,
  startDolmeangi,
  startEtcd,
  startRedis,
  tempDir,
  type RunningEtcd,
  type RunningServer,
} from './servers.js';

/** The most a whole bench waits, in all, for other processes to leave the machine alone. */
const QUIET_WAIT_MS = 180_000;

/** Runs the bench as the options say; resolves with the process exit code. */
export async function runBench(opts: BenchOptions, stdout: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const missing = checkProcfs() ?? ((await redisBenchmarkVersion()) === null ? 'redis-benchmark is not installed (Debian: apt-get install redis-tools)' : null);
  if (missing !== null) {
    process.stderr.write(`dolmeangi bench: ${missing}\n`);
    return 1;
  }
  const uninstall = installCleanup();
  let results: Results;
  try {
    results = await collect(opts);
  } finally {
    uninstall();
  }
  stdout(textReport(results));
  if (opts.out !== null) {
    const saved = save(results, opts.out, opts.docs, opts.analysis);
    stdout(`\nsaved ${saved.join(', ')}\n`);
  } else if (opts.docs !== null) {
    stdout(`\n--docs needs --out (the page links the saved chart and JSON); no page written\n`);
  }
  return results.errors.length > 0 || results.verified.some((v) => !v.ok) ? 1 : 0;
}

/** Per server: how many numbers the runs asked for, to check against the server afterwards. */
class Tally {
  numbers = 0n;
  failed = false;
}

/** One bench run: what it measured so far, and the steps that get it there. */
class Run {
  readonly plan: Plan;
  readonly redis: string | null;
  readonly etcd: string | null;
  readonly skipped: string[] = [];
  readonly errors: string[] = [];
  readonly matrix: MatrixRow[] = [];
  readonly batch: BatchRow[] = [];
  readonly metrics: MetricsRow[] = [];
  readonly idle: IdleRow[] = [];
  client: ClientRow[] = [];
  readonly group: GroupRow[] = [];
  readonly verified: Verification[] = [];
  private readonly servers: ServerSpec[];
  private readonly cells: readonly Cell[];
  readonly progress: Progress;

  constructor(readonly opts: BenchOptions) {
    this.plan = { smoke: opts.smoke, seconds: opts.seconds, quiet: new QuietBudget(QUIET_WAIT_MS) };
    this.redis = opts.redis ? redisVersion() : null;
    if (!opts.redis) this.skipped.push('redis: --no-redis');
    else if (this.redis === null) this.skipped.push('redis: redis-server is not installed, so no Redis rows and no ratios');
    const wanted: readonly ServerId[] = opts.quick ? ['dolmeangi-memory', 'redis'] : SERVER_ORDER;
    this.servers = wanted.map((id) => SERVERS[id]).filter((s) => s.kind === 'dolmeangi' || this.redis !== null);
    this.etcd = opts.quick ? null : etcdVersion();
    if (!opts.quick && this.etcd === null) this.skipped.push('group: etcd is not installed (Debian: apt-get install etcd-server), so no group-mode rows');
    this.cells = opts.quick ? QUICK_CELLS : matrixCells();
    const extras = opts.quick ? 0 : 2 * METRICS_CELLS.length + this.idleServers().length + 1 + this.groupSteps();
    this.progress = new Progress(this.servers.reduce((n, s) => n + this.stepsFor(s), 0) + extras);
  }

  async all(): Promise<void> {
    try {
      await this.matrixInTurns();
      if (!this.opts.quick) {
        await this.metricsOffOn();
        for (const spec of this.idleServers()) await this.idleConnections(spec);
        await this.clientLibrary();
        if (this.etcd !== null) await this.groupLeader();
      }
    } finally {
      this.progress.finish();
    }
  }

  private groupRounds(): number {
    return this.opts.smoke ? 1 : GROUP_ROUNDS;
  }

  private groupSteps(): number {
    return this.etcd === null ? 0 : 2 * GROUP_CELLS.length * this.groupRounds();
  }

  private stepsFor(spec: ServerSpec): number {
    return this.cells.length + (this.withBatch(spec) ? BATCH_SIZES.length : 0);
  }

  private withBatch(spec: ServerSpec): boolean {
    return !this.opts.quick && BATCH_SERVERS.includes(spec.id);
  }

  private idleServers(): ServerSpec[] {
    return [SERVERS['dolmeangi-memory'], ...(this.redis !== null ? [SERVERS.redis] : [])];
  }

  /**
   * Every server of the matrix runs throughout, and each cell measures them in
   * turn (the order rotating from cell to cell). A shared virtual machine's speed
   * drifts by tens of percent over minutes; measuring one server's whole matrix
   * after another's would put that drift into the ratios.
   */
  private async matrixInTurns(): Promise<void> {
    const running: Array<{ spec: ServerSpec; server: RunningServer; tally: Tally }> = [];
    try {
      for (const spec of this.servers) {
        const server = await this.start(spec, this.stepsFor(spec));
        if (server !== null) running.push({ spec, server, tally: new Tally() });
      }
      for (const [i, cell] of this.cells.entries()) {
        for (const { spec, server, tally } of rotate(running, i)) {
          const row = await this.measure(`${spec.label} ${cellName(cell)}`, server, cell, spec.command, tally);
          if (row) this.matrix.push({ server: spec.id, ...row });
        }
      }
      const batching = running.filter((r) => this.withBatch(r.spec));
      for (const [i, size] of BATCH_SIZES.entries()) {
        for (const { spec, server, tally } of rotate(batching, i)) {
          const command = spec.batchCommand(size);
          const row = await this.measure(`${spec.label} ${command.join(' ')}`, server, BATCH_CELL, command, tally, size);
          if (row) this.batch.push({ server: spec.id, size, numbersPerSecond: row.rps * size, ...row });
        }
      }
      // A failed run sent an unknown number of requests: nothing to check against.
      for (const { spec, server, tally } of running) if (!tally.failed) this.verified.push(await verify(spec, server, tally));
    } finally {
      for (const { spec, server } of running) await this.stop(spec, server);
    }
  }

  /** The durable default twice, back to back: without and with the metrics endpoint. */
  private async metricsOffOn(): Promise<void> {
    const spec = SERVERS['dolmeangi-durable'];
    for (const on of [false, true]) {
      const metricsPort = on ? await freePort() : 0;
      const label = `${spec.label}, metrics ${on ? 'on' : 'off'}`;
      const variant = { ...spec, label, args: [...spec.args, `--metrics-port=${metricsPort}`] };
      await this.withServer(variant, METRICS_CELLS.length, async (server) => {
        const served = on && (await httpOk(metricsPort, '/metrics'));
        if (on && !served) {
          this.skipped.push(`metrics: GET /metrics on --metrics-port=${metricsPort} did not answer 200; "on" measured a server without a working endpoint`);
        }
        const tally = new Tally();
        for (const cell of METRICS_CELLS) {
          const row = await this.measure(`${label} ${cellName(cell)}`, server, cell, spec.command, tally);
          if (row) this.metrics.push({ metrics: on ? 'on' : 'off', served, ...row });
        }
        if (!tally.failed) this.verified.push(await verify(variant, server, tally));
      });
    }
  }

  /** On a fresh server, so that earlier load has not grown its heap. */
  private async idleConnections(spec: ServerSpec): Promise<void> {
    const n = this.opts.idleConnections;
    const limit = String(n + 100);
    const variant = { ...spec, args: [...spec.args, ...(spec.kind === 'dolmeangi' ? [`--max-connections=${limit}`] : ['--maxclients', limit])] };
    await this.withServer(variant, 1, async (server) => {
      const row = await this.step(
        `${spec.label}: ${n} idle connections`,
        async () => {
          const m = await idleConnectionMemory(server, n);
          return { server: spec.id, connections: n, ...m, bytesPerConnection: (m.rssAfterBytes - m.rssBeforeBytes) / n };
        },
        (r) => `${(r.bytesPerConnection / 1024).toFixed(1)} KiB per connection`,
      );
      if (row) this.idle.push(row);
    });
  }

  private async clientLibrary(): Promise<void> {
    const budget = this.opts.smoke ? { seconds: 0.05, maxNumbers: 500 } : { seconds: this.opts.seconds, maxNumbers: 50_000_000 };
    await this.withServer(SERVERS['dolmeangi-memory'], 1, async (server) => {
      const rows = await this.step(
        'client library: sequential, pipelined, allocator',
        () => clientLibraryRates(server, budget),
        (rs) => rs.map((r) => `${r.mode} ${Math.round(r.numbersPerSecond).toLocaleString('en-US')}/s`).join(', '),
      );
      if (rows) this.client = rows;
    });
  }

  /**
   * A group leader (with its one-member etcd) against a single durable node, each
   * alone on the machine, as each would be deployed: a round starts one, measures
   * it at every group cell and stops it, then does the same with the other; the
   * order swaps each round, so that the machine drifting in speed hits both. etcd
   * shares the machine with the leader (its CPU shows under "others %").
   */
  private async groupLeader(): Promise<void> {
    const single = { ...SERVERS['dolmeangi-durable'], label: 'dolmeangi durable (default), beside the group leader' };
    for (let round = 1; round <= this.groupRounds(); round++) {
      const turns = [
        () => this.withServer(single, GROUP_CELLS.length, (server) => this.groupCells('single', round, single, server)),
        () => this.groupLeaderRound(round),
      ];
      for (const turn of rotate(turns, round - 1)) await turn();
    }
  }

  private async groupLeaderRound(round: number): Promise<void> {
    let etcd: RunningEtcd;
    try {
      etcd = await startEtcd();
    } catch (err) {
      this.errors.push(`etcd: cannot start: ${(err as Error).message}`);
      this.progress.skip(GROUP_CELLS.length, 'group mode: etcd not started');
      return;
    }
    this.progress.note(`started etcd (pid ${etcd.pid}, ${etcd.url})`);
    try {
      // A group member must know the address it tells clients: port 0 will not do.
      const port = await freePort();
      const spec: ServerSpec = {
        ...SERVERS['dolmeangi-durable'],
        label: 'dolmeangi group leader',
        args: [`--port=${port}`, `--advertise=${HOST}:${port}`, `--etcd=${etcd.url}`, '--node-id=bench'],
        dataDir: false,
        leads: true,
      };
      await this.withServer(spec, GROUP_CELLS.length, (server) => this.groupCells('leader', round, spec, server));
    } finally {
      await etcd.stop();
    }
  }

  private async groupCells(role: GroupRow['role'], round: number, spec: ServerSpec, server: RunningServer): Promise<void> {
    const tally = new Tally();
    for (const cell of GROUP_CELLS) {
      const row = await this.measure(`group mode, ${spec.label} ${cellName(cell)}, round ${round}`, server, cell, spec.command, tally);
      if (row) this.group.push({ role, round, ...row });
    }
    if (!tally.failed) this.verified.push(await verify(spec, server, tally));
  }

  /**
   * One measured load of `command`, each request taking `per` numbers: counted in
   * `tally`, which a failed run marks as unknown (nothing to verify afterwards).
   */
  private async measure(label: string, server: RunningServer, cell: Cell, command: readonly string[], tally: Tally, per = 1) {
    const row = await this.step(
      label,
      () => measureLoad(server, cell, command, this.plan, (n) => (tally.numbers += BigInt(n) * BigInt(per))),
      (r) => (per === 1 ? loadSummary(r) : `${Math.round(r.rps * per).toLocaleString('en-US')} numbers/s; ${loadSummary(r)}`),
    );
    if (row === null) tally.failed = true;
    return row;
  }

  /** Starts the server, runs `body`, always stops it. When it cannot start, its `steps` are counted as skipped. */
  private async withServer(spec: ServerSpec, steps: number, body: (server: RunningServer) => Promise<void>): Promise<void> {
    const server = await this.start(spec, steps);
    if (server === null) return;
    try {
      await body(server);
    } finally {
      await this.stop(spec, server);
    }
  }

  /** Starts a server; when it cannot start, records why, counts its `steps` as skipped and returns null. */
  private async start(spec: ServerSpec, steps: number): Promise<RunningServer | null> {
    let server: RunningServer;
    try {
      server =
        spec.kind === 'dolmeangi'
          ? await startDolmeangi(spec.label, { args: spec.args, dataDir: spec.dataDir, ready: spec.leads === true ? leads : undefined })
          : await startRedis(spec.label, spec.args);
    } catch (err) {
      this.errors.push(`${spec.label}: cannot start: ${(err as Error).message}`);
      this.progress.note(`${spec.label}: cannot start: ${(err as Error).message}`);
      this.progress.skip(steps, `${spec.label}: not started`);
      return null;
    }
    this.progress.note(`started ${spec.label} (pid ${server.pid}, port ${server.port})`);
    return server;
  }

  private async stop(spec: ServerSpec, server: RunningServer): Promise<void> {
    const code = await server.stop();
    // dolmeangi persists its exact next numbers on SIGTERM and exits 0; anything else is worth knowing.
    if (code !== 0) this.errors.push(`${spec.label}: exited with ${code} on SIGTERM`);
  }

  /** Runs one step; a failure is recorded, not thrown, so the other parts still run. */
  private async step<T>(label: string, run: () => Promise<T>, summary: (t: T) => string): Promise<T | null> {
    this.progress.begin(label);
    try {
      const t = await run();
      this.progress.end(summary(t));
      return t;
    } catch (err) {
      this.errors.push(`${label}: ${(err as Error).message}`);
      this.progress.end(`FAILED: ${(err as Error).message}`);
      return null;
    }
  }

  ratios(): Ratio[] {
    return ratiosOf(this.matrix);
  }
}

function loadSummary(r: LoadRow): string {
  return (
    `${Math.round(r.rps).toLocaleString('en-US')} req/s, ${r.cpuUsPerRequest.toFixed(2)} µs CPU/req, p99 ${r.p99Ms.toFixed(3)} ms` +
    (r.otherCpuPercent > DISTURBED_PERCENT ? ` (other processes used ${r.otherCpuPercent.toFixed(0)}% of a core)` : '')
  );
}

async function collect(opts: BenchOptions): Promise<Results> {
  const started = new Date();
  const run = new Run(opts);
  await run.all();
  return {
    format: 1,
    date: started.toISOString(),
    mode: opts.quick ? 'quick' : 'full',
    smoke: opts.smoke,
    settings: { secondsPerRun: opts.seconds, idleConnections: opts.idleConnections },
    machine: machine(),
    versions: {
      node: process.versions.node,
      dolmeangi: VERSION,
      redis: run.redis,
      redisBenchmark: await redisBenchmarkVersion(),
      etcd: run.etcd,
    },
    dataFilesystem: filesystemType(tempDir('probe')),
    matrix: run.matrix,
    ratios: run.ratios(),
    batch: run.batch,
    metrics: run.metrics,
    idle: run.idle,
    client: run.client,
    group: run.group,
    verified: run.verified,
    skipped: run.skipped,
    errors: run.errors,
  };
}

/**
 * redis-benchmark does not look at replies, so an error reply would count as a
 * fast request. Every request must have taken its numbers: dolmeangi has no
 * gaps while it runs, so CURRENT is exactly initial (1) plus the numbers asked for.
 */
async function verify(spec: ServerSpec, server: RunningServer, tally: Tally): Promise<Verification> {
  const expected = spec.kind === 'dolmeangi' ? tally.numbers + 1n : tally.numbers;
  let actual: string;
  try {
    actual =
      spec.kind === 'dolmeangi'
        ? String(await queryInteger(server.port, ['CURRENT']))
        : await query(server.port, ['GET', 'counter']);
  } catch (err) {
    actual = `error: ${(err as Error).message}`;
  }
  return { server: spec.label, expected: String(expected), actual, ok: actual === String(expected) };
}

/** `list` starting from its `by`-th element (modulo its length), wrapping round. */
function rotate<T>(list: readonly T[], by: number): T[] {
  const at = list.length === 0 ? 0 : by % list.length;
  return [...list.slice(at), ...list.slice(0, at)];
}

/** A new group member leads once its lease is granted and its marks are loaded: CURRENT then answers a number. */
async function leads(port: number): Promise<boolean> {
  await queryInteger(port, ['CURRENT']);
  return true;
}

function httpOk(port: number, pathname: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: HOST, port, path: pathname, timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** Writes the results; returns the paths written. Each file is replaced atomically. */
function save(r: Results, outDir: string, docs: string | null, analysis: string | null): string[] {
  mkdirSync(outDir, { recursive: true });
  const stamp = r.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const json = JSON.stringify(r, null, 2) + '\n';
  const files: Array<[string, string]> = [
    [path.join(outDir, `${stamp}.json`), json],
    [path.join(outDir, 'latest.json'), json],
    [path.join(outDir, 'latest.svg'), renderChart(r)],
  ];
  if (docs !== null) {
    files.push([docs, renderDocs(r, { docs, chart: files[2]![0], json: files[0]![0], analysis })]);
  }
  for (const [file, text] of files) {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file);
  }
  return files.map(([f]) => f);
}
