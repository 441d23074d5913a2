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
import { runBenchCommand } from '../src/cli/bench-command.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

process.exitCode = await runBenchCommand(process.argv.slice(2), (opts) => {
  // Docs a full run writes carry the targets section, wherever the results go; a quick run's stay plain.
  const analysis = opts.smoke ? null : path.join(root, 'bench/targets.md');
  if (opts.quick) return opts;
  if (opts.out !== null) return { ...opts, analysis: opts.docs === null ? null : analysis };
  const out = opts.smoke ? mkdtempSync(path.join(tmpdir(), 'dolmeangi-bench-smoke-')) : path.join(root, 'bench/results');
  const docs = opts.smoke ? path.join(out, 'benchmarks.md') : path.join(root, 'docs/benchmarks.md');
  return { ...opts, out, docs: opts.docs ?? docs, analysis };
});
