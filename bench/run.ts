/**
 * `npm run bench` and `npm run bench:quick`: the bench from the sources, with
 * this repository's places for results. A full run saves to bench/results/ and
 * rewrites docs/benchmarks.md; quick runs only print; smoke runs save to a
 * temporary directory so that tiny-count numbers never replace real ones.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runBench } from '../src/bench/run.js';
import { BENCH_HELP, BenchUsageError, parseBenchArgs } from '../src/bench/options.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function main(argv: string[]): Promise<number> {
  let opts;
  try {
    opts = parseBenchArgs(argv, process.env);
  } catch (err) {
    if (!(err instanceof BenchUsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    return 2;
  }
  if (opts === null) {
    process.stdout.write(`${BENCH_HELP}\n`);
    return 0;
  }
  if (opts.out === null && !opts.quick) {
    const out = opts.smoke ? mkdtempSync(path.join(tmpdir(), 'dolmeangi-bench-smoke-')) : path.join(root, 'bench/results');
    const docs = opts.smoke ? path.join(out, 'benchmarks.md') : path.join(root, 'docs/benchmarks.md');
    opts = { ...opts, out, docs: opts.docs ?? docs };
  }
  return runBench(opts);
}

process.exitCode = await main(process.argv.slice(2));
