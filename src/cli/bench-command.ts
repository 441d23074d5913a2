/** `dolmeangi bench`: parses its options and runs the bench engine in src/bench. */
import { runBench } from '../bench/run.js';
import { BENCH_HELP, BenchUsageError, parseBenchArgs, type BenchOptions } from '../bench/options.js';

/** `complete` fills in what the options left open (where `npm run bench` saves its results). */
export async function runBenchCommand(argv: string[], complete?: (opts: BenchOptions) => BenchOptions): Promise<number> {
  let opts;
  try {
    opts = parseBenchArgs(argv, process.env);
  } catch (err) {
    if (!(err instanceof BenchUsageError)) throw err;
    process.stderr.write(`dolmeangi bench: ${err.message}\n`);
    return 2;
  }
  if (opts === null) {
    process.stdout.write(`${BENCH_HELP}\n`);
    return 0;
  }
  return runBench(complete?.(opts) ?? opts);
}
