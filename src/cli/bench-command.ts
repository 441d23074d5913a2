/** `dolmeangi bench`: parses its options and runs the bench engine in src/bench. */
import { runBench } from '../bench/run.js';
import { BENCH_HELP, BenchUsageError, parseBenchArgs, type BenchOptions } from '../bench/options.js';

export interface BenchCommandOptions {
  /** Prefix of usage errors. */
  readonly name?: string;
  /** Fills in what the options left open (where `npm run bench` saves its results). */
  readonly complete?: (opts: BenchOptions) => BenchOptions;
}

export async function runBenchCommand(argv: string[], command: BenchCommandOptions = {}): Promise<number> {
  let opts;
  try {
    opts = parseBenchArgs(argv, process.env);
  } catch (err) {
    if (!(err instanceof BenchUsageError)) throw err;
    process.stderr.write(`${command.name ?? 'dolmeangi bench'}: ${err.message}\n`);
    return 2;
  }
  if (opts === null) {
    process.stdout.write(`${BENCH_HELP}\n`);
    return 0;
  }
  return runBench(command.complete?.(opts) ?? opts);
}
