/**
 * The shape of a bench run's results (saved as JSON, read back by the chart
 * and the docs), and the servers it compares.
 */
import type { Machine } from './proc.js';

export type ServerId = 'dolmeangi-memory' | 'dolmeangi-durable' | 'dolmeangi-reserve0' | 'redis' | 'redis-aof-always';

export interface ServerSpec {
  readonly id: ServerId;
  readonly label: string;
  readonly kind: 'dolmeangi' | 'redis';
  /** Options for `dolmeangi sequencer` or redis-server. */
  readonly args: readonly string[];
  /** dolmeangi only: give it a `--data-dir` in a temporary directory. */
  readonly dataDir: boolean;
  /** dolmeangi only: a group member, measured once it leads (its lease granted, its marks loaded). */
  readonly leads?: boolean;
  /** What each request does: take one number. */
  readonly command: readonly string[];
  /** The same work as GETSEQ_BATCH <size>. */
  batchCommand(size: number): string[];
}

const dolmeangi = (id: ServerId, label: string, args: string[], dataDir: boolean): ServerSpec => ({
  id,
  label,
  kind: 'dolmeangi',
  args,
  dataDir,
  command: ['GETSEQ'],
  batchCommand: (size) => ['GETSEQ_BATCH', String(size)],
});

const redis = (id: ServerId, label: string, args: string[]): ServerSpec => ({
  id,
  label,
  kind: 'redis',
  args,
  dataDir: false,
  command: ['INCR', 'counter'],
  batchCommand: (size) => ['INCRBY', 'counter', String(size)],
});

export const SERVERS: Readonly<Record<ServerId, ServerSpec>> = {
  'dolmeangi-memory': dolmeangi('dolmeangi-memory', 'dolmeangi --in-memory', ['--in-memory'], false),
  'dolmeangi-durable': dolmeangi('dolmeangi-durable', 'dolmeangi durable (default)', [], true),
  'dolmeangi-reserve0': dolmeangi('dolmeangi-reserve0', 'dolmeangi --reserve=0', ['--reserve=0'], true),
  redis: redis('redis', 'redis, no persistence', ['--save', '', '--appendonly', 'no']),
  'redis-aof-always': redis('redis-aof-always', 'redis, appendfsync always', ['--save', '', '--appendonly', 'yes', '--appendfsync', 'always']),
};

/** Each dolmeangi mode against the Redis set-up that promises as much (or, for the first two, less). */
export const COMPARISONS: ReadonlyArray<{ readonly server: ServerId; readonly baseline: ServerId }> = [
  { server: 'dolmeangi-memory', baseline: 'redis' },
  { server: 'dolmeangi-durable', baseline: 'redis' },
  { server: 'dolmeangi-reserve0', baseline: 'redis-aof-always' },
];

export interface Cell {
  readonly clients: number;
  readonly pipeline: number;
}

export interface LoadRow extends Cell {
  readonly command: string;
  readonly requests: number;
  readonly rps: number;
  /** Server CPU (user + system, all threads) per request, in microseconds. */
  readonly cpuUsPerRequest: number;
  readonly avgMs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Server RSS right after the run. */
  readonly rssBytes: number;
  /**
   * CPU used during the run by everything on the machine except the server and
   * the load generator, in % of one core: above a few %, the run was disturbed.
   */
  readonly otherCpuPercent: number;
}

export interface MatrixRow extends LoadRow {
  readonly server: ServerId;
}

export interface Ratio extends Cell {
  readonly server: ServerId;
  readonly baseline: ServerId;
  /** Throughput of the server over its baseline's: above 1 is faster. */
  readonly rps: number;
  /** CPU per request of the server over its baseline's: below 1 is cheaper. */
  readonly cpu: number;
}

export interface BatchRow extends LoadRow {
  readonly server: ServerId;
  readonly size: number;
  readonly numbersPerSecond: number;
}

export interface MetricsRow extends LoadRow {
  readonly metrics: 'off' | 'on';
  /** Whether GET /metrics answered 200 (the endpoint may not exist yet in a build). */
  readonly served: boolean;
}

export interface IdleRow {
  readonly server: ServerId;
  readonly connections: number;
  readonly rssBeforeBytes: number;
  readonly rssAfterBytes: number;
  readonly bytesPerConnection: number;
}

export interface ClientRow {
  readonly mode: 'sequential' | 'pipelined' | 'allocator';
  /** How the library was driven, in words. */
  readonly setup: string;
  readonly numbers: number;
  readonly seconds: number;
  readonly numbersPerSecond: number;
  /** CPU of the process running the library, per number. */
  readonly clientCpuUsPerNumber: number;
  readonly serverCpuUsPerNumber: number;
}

/**
 * Group mode: the leader of a one-member etcd group against a single durable
 * node, measured in alternating rounds so that drift on the machine hits both.
 */
export interface GroupRow extends LoadRow {
  readonly role: 'leader' | 'single';
  readonly round: number;
}

/** After a server's runs: did it hand out exactly what was asked (no error replies counted as work)? */
export interface Verification {
  readonly server: string;
  readonly expected: string;
  readonly actual: string;
  readonly ok: boolean;
}

export interface Results {
  readonly format: 1;
  readonly date: string;
  readonly mode: 'full' | 'quick';
  /** Tiny counts: the run checked the pipeline and its numbers mean nothing. */
  readonly smoke: boolean;
  readonly settings: { readonly secondsPerRun: number; readonly idleConnections: number };
  readonly machine: Machine;
  readonly versions: {
    readonly node: string;
    readonly dolmeangi: string;
    readonly redis: string | null;
    readonly redisBenchmark: string | null;
    readonly etcd: string | null;
  };
  /** Filesystem of the temporary data directories: fsync on tmpfs costs nothing. */
  readonly dataFilesystem: string;
  readonly matrix: MatrixRow[];
  readonly ratios: Ratio[];
  readonly batch: BatchRow[];
  readonly metrics: MetricsRow[];
  readonly idle: IdleRow[];
  readonly client: ClientRow[];
  readonly group: GroupRow[];
  readonly verified: Verification[];
  /** Parts left out on purpose, and why (e.g. Redis not installed). */
  readonly skipped: string[];
  /** Parts that failed; a run with errors exits 1. */
  readonly errors: string[];
}

/** Other processes using more than this much of a core during a run make its numbers suspect. */
export const DISTURBED_PERCENT = 10;

const MATRIX_CLIENTS = [1, 50, 200] as const;
const MATRIX_PIPELINES = [1, 16] as const;
export const QUICK_CELLS: readonly Cell[] = [
  { clients: 50, pipeline: 1 },
  { clients: 50, pipeline: 16 },
];
export const BATCH_SIZES = [1, 10, 100, 1_000, 10_000, 100_000] as const;
/** Batches at a pipelined load: the point is numbers per second at the top. */
export const BATCH_CELL: Cell = { clients: 50, pipeline: 16 };
export const BATCH_SERVERS: readonly ServerId[] = ['dolmeangi-memory', 'dolmeangi-durable', 'redis'];
export const METRICS_CELLS: readonly Cell[] = QUICK_CELLS;
export const GROUP_CELLS: readonly Cell[] = QUICK_CELLS;
/**
 * Rounds of leader and single node, alternating which goes first: even, so each goes first as often.
 * Eight, because one round's ratio varies by about 20% either way on a 2-core machine (a fresh process
 * each time, etcd beside it), and the median of four moved by 0.1 between runs.
 */
export const GROUP_ROUNDS = 8;

export const cellName = (c: Cell): string => `-c ${c.clients} -P ${c.pipeline}`;
export const sameCell = (a: Cell, b: Cell): boolean => a.clients === b.clients && a.pipeline === b.pipeline;

/** The cells `rows` cover, each once, by concurrency then pipeline depth. */
export function distinctCells(rows: readonly Cell[]): Cell[] {
  const cells: Cell[] = [];
  for (const r of rows) if (!cells.some((c) => sameCell(c, r))) cells.push({ clients: r.clients, pipeline: r.pipeline });
  return cells.sort((a, b) => a.clients - b.clients || a.pipeline - b.pipeline);
}

/** Servers in the order every table and chart lists them. */
export const SERVER_ORDER = Object.keys(SERVERS) as ServerId[];

export function matrixCells(): Cell[] {
  const cells: Cell[] = [];
  for (const clients of MATRIX_CLIENTS) for (const pipeline of MATRIX_PIPELINES) cells.push({ clients, pipeline });
  return cells;
}

/** Every comparison of COMPARISONS at every cell where both servers were measured. */
export function ratiosOf(matrix: readonly MatrixRow[]): Ratio[] {
  const ratios: Ratio[] = [];
  for (const c of COMPARISONS) {
    for (const row of matrix.filter((m) => m.server === c.server)) {
      const base = matrix.find((m) => m.server === c.baseline && sameCell(m, row));
      if (base === undefined) continue;
      ratios.push({
        server: c.server,
        baseline: c.baseline,
        clients: row.clients,
        pipeline: row.pipeline,
        rps: row.rps / base.rps,
        cpu: row.cpuUsPerRequest / base.cpuUsPerRequest,
      });
    }
  }
  return ratios;
}

/** The middle value (the mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
