/** `dolmeangi bench` options: the same for the CLI and for `npm run bench`. */
import { parseArgs } from 'node:util';

export interface BenchOptions {
  /** Only -c 50 at -P 1 and -P 16, dolmeangi in-memory against Redis without persistence. */
  readonly quick: boolean;
  /** Tiny counts: runs every part in seconds to check the pipeline; the numbers mean nothing. */
  readonly smoke: boolean;
  /** Target length of each measured run. */
  readonly seconds: number;
  /** Directory for <date>.json, latest.json and latest.svg; null saves nothing. */
  readonly out: string | null;
  /** Markdown page to (re)write from the results; null writes none. */
  readonly docs: string | null;
  /** Hand-written Markdown (targets, what limits them) to include in that page; null includes none. */
  readonly analysis: string | null;
  /** Compare with redis-server when it is installed. */
  readonly redis: boolean;
  readonly idleConnections: number;
}

export const BENCH_HELP = `Usage: dolmeangi bench [options]

Starts its own servers on free loopback ports (dolmeangi --in-memory, durable with
a temporary --data-dir, --reserve=0; redis-server without persistence and with
appendfsync always when installed), drives each with redis-benchmark and prints
requests/s, server CPU per request, p50/p99 latency and RSS, with ratios to Redis.
With etcd installed, it also measures a group leader (on a one-member etcd) against
a single durable node, in alternating rounds.
Needs redis-benchmark (Debian: redis-tools) and Linux (/proc).

Options:
  --quick                  only -c 50 -P 1 and -c 50 -P 16, in-memory vs Redis
  --smoke                  tiny counts: checks every step in seconds (also BENCH_SMOKE=1)
  --seconds=<s>            target length of each measured run (default 5, 0.5 to 120)
  --idle-connections=<n>   connections for the idle-memory test (default 1000)
  --out=<dir>              save <date>.json, latest.json and latest.svg there
  --docs=<file>            write a Markdown report there (e.g. docs/benchmarks.md)
  --no-redis               measure dolmeangi only
  --help                   show this help`;

export class BenchUsageError extends Error {}

/** Parses bench options; returns null for --help. Throws BenchUsageError naming the bad option. */
export function parseBenchArgs(argv: readonly string[], env: NodeJS.ProcessEnv): BenchOptions | null {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: 'boolean' },
        smoke: { type: 'boolean' },
        seconds: { type: 'string' },
        'idle-connections': { type: 'string' },
        out: { type: 'string' },
        docs: { type: 'string' },
        'no-redis': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    throw new BenchUsageError(`${(err as Error).message.split('\n')[0]}; see dolmeangi bench --help`);
  }
  if (values.help === true) return null;
  const number = (name: string, def: number, min: number, max: number): number => {
    const raw = values[name];
    if (raw === undefined) return def;
    const n = Number(raw);
    if (String(raw).trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new BenchUsageError(`--${name}: expected a number from ${min} to ${max}, got '${String(raw)}'`);
    }
    return n;
  };
  const smoke = values.smoke === true || /^(1|true|yes|on)$/i.test(env.BENCH_SMOKE ?? '');
  const text = (name: string): string | null => {
    const raw = values[name];
    if (raw === undefined) return null;
    if (raw === '' || raw === true) throw new BenchUsageError(`--${name}: expected a path`);
    return String(raw);
  };
  return {
    quick: values.quick === true,
    smoke,
    seconds: number('seconds', 5, 0.5, 120),
    idleConnections: Math.round(number('idle-connections', smoke ? 20 : 1000, 1, 10_000)),
    out: text('out'),
    docs: text('docs'),
    analysis: null,
    redis: values['no-redis'] !== true,
  };
}
