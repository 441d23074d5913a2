/**
 * Runs redis-benchmark as the load generator and reads its results. The same
 * tool drives dolmeangi and Redis, so the client side of every comparison is identical.
 */
import { spawn } from 'node:child_process';
import { HOST } from './servers.js';

export interface LoadResult {
  /** Requests of the run measured. */
  readonly requests: number;
  /** Requests sent in all, counting runs repeated for being too fast to measure. */
  readonly sent: number;
  readonly rps: number;
  readonly avgMs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export interface LoadOptions {
  readonly port: number;
  readonly clients: number;
  readonly pipeline: number;
  readonly requests: number;
  /** The command and its arguments, e.g. ['GETSEQ'] or ['INCR', 'counter']. */
  readonly command: readonly string[];
  /** The run is killed, and fails, after this long. */
  readonly timeoutMs: number;
}

let version: string | null | undefined;

/** redis-benchmark's version, or null when it is not installed. */
export async function redisBenchmarkVersion(): Promise<string | null> {
  if (version === undefined) {
    try {
      const { code, stdout } = await run(['--version'], 5000);
      version = code === 0 ? (/(\d+\.\d+\.\d+)/.exec(stdout)?.[1] ?? stdout.trim()) : null;
    } catch {
      version = null;
    }
  }
  return version;
}

/**
 * Runs redis-benchmark once. A run that ends within its clock's resolution
 * reports "inf" requests/s; it is run again with ten times the requests, so
 * even a smoke run yields a finite figure.
 */
export async function redisBenchmark(o: LoadOptions): Promise<LoadResult> {
  let sent = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await runOnce(o);
      return { ...r, sent: sent + r.requests };
    } catch (err) {
      if (!(err instanceof TooFastError) || attempt >= 3) throw err;
      sent += o.requests;
      o = { ...o, requests: o.requests * 10 };
    }
  }
}

class TooFastError extends Error {}

async function runOnce(o: LoadOptions): Promise<Omit<LoadResult, 'sent'>> {
  const args = [
    '-h', HOST,
    '-p', String(o.port),
    '-c', String(o.clients),
    '-P', String(o.pipeline),
    '-n', String(o.requests),
    '--csv',
    ...o.command,
  ];
  const { code, stdout, stderr, timedOut } = await run(args, o.timeoutMs);
  const what = `redis-benchmark -c ${o.clients} -P ${o.pipeline} -n ${o.requests} ${o.command.join(' ')}`;
  if (timedOut) throw new Error(`${what}: killed after ${Math.round(o.timeoutMs / 1000)} s`);
  if (code !== 0) throw new Error(`${what}: exit ${code}: ${(stderr || stdout).trim().slice(-300)}`);
  if (/"inf"/.test(stdout)) throw new TooFastError(`${what}: finished too fast to measure`);
  const parsed = parseRedisBenchmark(stdout);
  if (parsed === null) throw new Error(`${what}: no results in its output: ${stdout.trim().slice(-300)}`);
  return { requests: o.requests, ...parsed };
}

function run(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn('redis-benchmark', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    // An exiting bench must not leave a load generator hammering nothing.
    const onExit = () => child.kill('SIGKILL');
    process.on('exit', onExit);
    child.once('error', (err) => {
      clearTimeout(timer);
      process.off('exit', onExit);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      process.off('exit', onExit);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

type Parsed = Omit<LoadResult, 'requests' | 'sent'>;

/**
 * Reads redis-benchmark's results from its `--csv` table, or failing that
 * from the "Summary" block of its default output (both printed by 7.x).
 * Returns null when neither is there or a number is not a number.
 */
export function parseRedisBenchmark(output: string): Parsed | null {
  return fromCsv(output) ?? fromSummary(output);
}

function fromCsv(output: string): Parsed | null {
  const lines = output.split(/\r?\n/);
  const at = lines.findIndex((l) => csvFields(l)[0] === 'test');
  if (at === -1 || at + 1 >= lines.length) return null;
  const header = csvFields(lines[at]!);
  const row = csvFields(lines[at + 1]!);
  const col = (name: string) => {
    const i = header.indexOf(name);
    return i === -1 ? NaN : Number(row[i]);
  };
  return checked({
    rps: col('rps'),
    avgMs: col('avg_latency_ms'),
    p50Ms: col('p50_latency_ms'),
    p99Ms: col('p99_latency_ms'),
    maxMs: col('max_latency_ms'),
  });
}

/** Splits one CSV line; fields may be quoted, with `""` for a quote inside. */
function csvFields(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let value = '';
      i++;
      while (i < line.length) {
        if (line[i] === '"' && line[i + 1] === '"') {
          value += '"';
          i += 2;
        } else if (line[i] === '"') {
          i++;
          break;
        } else {
          value += line[i++];
        }
      }
      out.push(value);
      i++; // the comma
    } else {
      const comma = line.indexOf(',', i);
      const end = comma === -1 ? line.length : comma;
      out.push(line.slice(i, end).trim());
      i = end + 1;
    }
  }
  return out;
}

function fromSummary(output: string): Parsed | null {
  // Progress lines are redrawn with CR; only what ends up on screen counts.
  const text = output.split('\n').map((l) => l.slice(l.lastIndexOf('\r') + 1)).join('\n');
  const rps = /throughput summary:\s*([\d.]+)\s*requests per second/.exec(text);
  const table = /^\s*avg\s+min\s+p50\s+p95\s+p99\s+max[ \t]*\n\s*([\d.]+(?:[ \t]+[\d.]+){5})/m.exec(text);
  if (!rps || !table) return null;
  const [avg, , p50, , p99, max] = table[1]!.trim().split(/\s+/).map(Number);
  return checked({ rps: Number(rps[1]), avgMs: avg!, p50Ms: p50!, p99Ms: p99!, maxMs: max! });
}

function checked(p: Parsed): Parsed | null {
  for (const v of Object.values(p)) if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return null;
  return p.rps > 0 ? p : null;
}
