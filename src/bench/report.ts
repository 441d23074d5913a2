/**
 * Results as Markdown tables: printed by the bench and pasted into
 * docs/benchmarks.md by the same code, so the two never disagree.
 */
import { COMPARISONS, DISTURBED_PERCENT, SERVERS, cellName, distinctCells, median, sameCell, SERVER_ORDER, type MatrixRow, type Results, type ServerId } from './results.js';

type Align = 'l' | 'r';

export function disturbedRuns(r: Results): number {
  return [...r.matrix, ...r.batch, ...r.metrics, ...r.group].filter((x) => x.otherCpuPercent > DISTURBED_PERCENT).length;
}

/** A Markdown table padded so it also reads well as plain text in a terminal. */
export function table(headers: readonly string[], rows: readonly string[][], align: readonly Align[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, 3, ...rows.map((r) => (r[i] ?? '').length)));
  const cell = (text: string, i: number) => (align[i] === 'r' ? text.padStart(widths[i]!) : text.padEnd(widths[i]!));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => cell(c, i)).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (align[i] === 'r' ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`;
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

export const fmt = {
  count: (n: number) => Math.round(n).toLocaleString('en-US'),
  us: (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)),
  ms: (n: number) => n.toFixed(3),
  mib: (bytes: number) => (bytes / 1048576).toFixed(1),
  kib: (bytes: number) => (bytes / 1024).toFixed(1),
  /** Other processes' CPU during a run; marked when it was enough to skew the result. */
  others: (pct: number) => `${pct.toFixed(0)}${pct > DISTURBED_PERCENT ? ' !' : ''}`,
  ratio: (r: number) => (Number.isFinite(r) ? `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}x` : 'n/a'),
};

const label = (id: ServerId) => SERVERS[id].label;

/** server, -c, -P, req/s and CPU µs/req, each with its ratio to Redis: the columns every matrix table opens with. */
function throughputCells(r: Results, m: MatrixRow): string[] {
  const ratio = r.ratios.find((x) => x.server === m.server && sameCell(x, m));
  return [
    label(m.server),
    String(m.clients),
    String(m.pipeline),
    fmt.count(m.rps),
    ratio ? fmt.ratio(ratio.rps) : '',
    fmt.us(m.cpuUsPerRequest),
    ratio ? fmt.ratio(ratio.cpu) : '',
  ];
}

export function matrixTable(r: Results): string {
  const rows = [...r.matrix].sort(
    (a, b) => a.clients - b.clients || a.pipeline - b.pipeline || SERVER_ORDER.indexOf(a.server) - SERVER_ORDER.indexOf(b.server),
  );
  return table(
    ['server', '-c', '-P', 'req/s', 'vs Redis', 'CPU µs/req', 'CPU vs Redis', 'p50 ms', 'p99 ms', 'RSS MiB', 'others %'],
    rows.map((m) => [...throughputCells(r, m), fmt.ms(m.p50Ms), fmt.ms(m.p99Ms), fmt.mib(m.rssBytes), fmt.others(m.otherCpuPercent)]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
}

/** One row per comparison, one column per cell: throughput ratio, then CPU-per-request ratio. */
export function ratioTable(r: Results): string {
  const cells = distinctCells(r.ratios);
  const rows = COMPARISONS.filter((c) => r.ratios.some((x) => x.server === c.server)).map((c) => [
    `${label(c.server)} / ${label(c.baseline)}`,
    ...cells.map((cell) => {
      const x = r.ratios.find((y) => y.server === c.server && sameCell(y, cell));
      return x ? `${fmt.ratio(x.rps)} (CPU ${fmt.ratio(x.cpu)})` : '';
    }),
  ]);
  return table(['req/s ratio (CPU/req ratio)', ...cells.map(cellName)], rows, ['l', ...cells.map((): Align => 'r')]);
}

export function batchTable(r: Results): string {
  return table(
    ['server', 'command', 'req/s', 'numbers/s', 'CPU µs/req', 'p50 ms', 'p99 ms', 'others %'],
    r.batch.map((b) => [
      label(b.server),
      b.command,
      fmt.count(b.rps),
      fmt.count(b.numbersPerSecond),
      fmt.us(b.cpuUsPerRequest),
      fmt.ms(b.p50Ms),
      fmt.ms(b.p99Ms),
      fmt.others(b.otherCpuPercent),
    ]),
    ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
}

export function metricsTable(r: Results): string {
  return table(
    ['metrics', '-c', '-P', 'req/s', 'CPU µs/req', 'p50 ms', 'p99 ms', 'RSS MiB', 'others %', 'GET /metrics'],
    r.metrics.map((m) => [
      m.metrics === 'on' ? 'on (--metrics-port=<port>)' : 'off (--metrics-port=0)',
      String(m.clients),
      String(m.pipeline),
      fmt.count(m.rps),
      fmt.us(m.cpuUsPerRequest),
      fmt.ms(m.p50Ms),
      fmt.ms(m.p99Ms),
      fmt.mib(m.rssBytes),
      fmt.others(m.otherCpuPercent),
      m.metrics === 'off' ? '' : m.served ? '200' : 'not served',
    ]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  );
}

export function idleTable(r: Results): string {
  return table(
    ['server', 'connections', 'RSS before MiB', 'RSS after MiB', 'per connection KiB'],
    r.idle.map((i) => [label(i.server), fmt.count(i.connections), fmt.mib(i.rssBeforeBytes), fmt.mib(i.rssAfterBytes), fmt.kib(i.bytesPerConnection)]),
    ['l', 'r', 'r', 'r', 'r'],
  );
}

export function clientTable(r: Results): string {
  return table(
    ['client library', 'how', 'numbers/s', 'client CPU µs/number', 'server CPU µs/number'],
    r.client.map((c) => [c.mode, c.setup, fmt.count(c.numbersPerSecond), fmt.us(c.clientCpuUsPerNumber), fmt.us(c.serverCpuUsPerNumber)]),
    ['l', 'l', 'r', 'r', 'r'],
  );
}

/** One row per round and cell, then the medians: the leader against the single node. */
export function groupTable(r: Results): string {
  const rows: string[][] = [];
  for (const cell of distinctCells(r.group)) {
    const here = r.group.filter((g) => sameCell(g, cell));
    // Rounds where both were measured, in order.
    const pairs = here
      .filter((g) => g.role === 'leader')
      .flatMap((leader) => {
        const single = here.find((g) => g.role === 'single' && g.round === leader.round);
        return single === undefined ? [] : [{ round: leader.round, leader, single }];
      })
      .sort((a, b) => a.round - b.round);
    for (const p of pairs) {
      rows.push([
        cellName(cell),
        String(p.round),
        fmt.count(p.leader.rps),
        fmt.count(p.single.rps),
        fmt.ratio(p.leader.rps / p.single.rps),
        fmt.us(p.leader.cpuUsPerRequest),
        fmt.us(p.single.cpuUsPerRequest),
        fmt.others(p.leader.otherCpuPercent),
        fmt.others(p.single.otherCpuPercent),
      ]);
    }
    if (pairs.length > 1) {
      // The ratio is the median of each round's own ratio: the rounds are paired,
      // and a ratio of medians taken from different rounds would undo that.
      rows.push([
        cellName(cell),
        'median',
        fmt.count(median(pairs.map((p) => p.leader.rps))),
        fmt.count(median(pairs.map((p) => p.single.rps))),
        fmt.ratio(median(pairs.map((p) => p.leader.rps / p.single.rps))),
        fmt.us(median(pairs.map((p) => p.leader.cpuUsPerRequest))),
        fmt.us(median(pairs.map((p) => p.single.cpuUsPerRequest))),
        '',
        '',
      ]);
    }
  }
  return table(
    ['cell', 'round', 'leader req/s', 'single req/s', 'leader / single', 'leader CPU µs/req', 'single CPU µs/req', 'others % (leader)', 'others % (single)'],
    rows,
    ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
}

/** The short form for `bench:quick`: throughput and the ratio to Redis. */
function quickTable(r: Results): string {
  const rows = [...r.matrix].sort((a, b) => a.pipeline - b.pipeline);
  return table(
    ['server', '-c', '-P', 'req/s', 'vs Redis', 'CPU µs/req', 'CPU vs Redis', 'others %'],
    rows.map((m) => [...throughputCells(r, m), fmt.others(m.otherCpuPercent)]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
}

/** Everything, for the terminal. */
export function textReport(r: Results): string {
  const parts: string[] = [];
  const section = (title: string, body: string) => parts.push(`${title}\n\n${body}\n`);
  section(
    `dolmeangi bench (${r.mode}${r.smoke ? ', smoke: tiny counts, numbers mean nothing' : ''}), ${r.date}: ${r.machine.cores} cores, ${r.machine.cpuModel}; node ${r.versions.node}, redis ${r.versions.redis ?? 'not installed'}`,
    r.mode === 'quick' ? quickTable(r) : matrixTable(r),
  );
  if (r.mode !== 'quick' && r.ratios.length > 0) section('Ratios to Redis', ratioTable(r));
  if (r.batch.length > 0) section('GETSEQ_BATCH (Redis: INCRBY)', batchTable(r));
  if (r.metrics.length > 0) section('Metrics off / on (durable default)', metricsTable(r));
  if (r.idle.length > 0) section('Idle connections', idleTable(r));
  if (r.client.length > 0) section('Client library (dolmeangi --in-memory)', clientTable(r));
  if (r.group.length > 0) section('Group mode: leader on a one-member etcd vs single durable node', groupTable(r));
  const disturbed = disturbedRuns(r);
  if (disturbed > 0) {
    parts.push(`warning: in ${disturbed} run(s) (marked !) other processes used more than ${DISTURBED_PERCENT}% of a core; rerun on a quiet machine`);
  }
  for (const s of r.skipped) parts.push(`skipped: ${s}`);
  for (const v of r.verified.filter((x) => !x.ok)) parts.push(`CHECK FAILED: ${v.server}: expected ${v.expected}, got ${v.actual}`);
  for (const e of r.errors) parts.push(`ERROR: ${e}`);
  return parts.join('\n') + '\n';
}
