/**
 * Where does the server spend its time under load? Runs the built server under
 * `node --cpu-prof`, drives it with redis-benchmark, stops it cleanly (the
 * profile is written at exit) and prints the functions with the most self time,
 * mapped back to the TypeScript sources through the build's source maps.
 *
 *   node --import tsx bench/profile.ts [-c 50] [-P 16] [--seconds=10] [--durable | --reserve0]
 *   node --import tsx bench/profile.ts --summarize=/tmp/x.cpuprofile
 *
 * Profiles go to the system temporary directory, never into the repository.
 */
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { QuietBudget, measureLoad } from '../src/bench/load.js';
import { installCleanup, startDolmeangi } from '../src/bench/servers.js';
import { table } from '../src/bench/report.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const { values } = parseArgs({
  options: {
    c: { type: 'string', default: '50' },
    P: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '10' },
    durable: { type: 'boolean' },
    reserve0: { type: 'boolean' },
    top: { type: 'string', default: '25' },
    summarize: { type: 'string' },
  },
});

const top = Number(values.top);
let profileFile = values.summarize;
if (profileFile === undefined) {
  const dir = mkdtempSync(path.join(tmpdir(), 'dolmeangi-profile-'));
  const args = values.reserve0 ? ['--reserve=0'] : values.durable ? [] : ['--in-memory'];
  const uninstall = installCleanup();
  try {
    const server = await startDolmeangi('profiled server', {
      args,
      dataDir: values.durable === true || values.reserve0 === true,
      nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`],
    });
    const cell = { clients: Number(values.c), pipeline: Number(values.P) };
    const plan = { smoke: false, seconds: Number(values.seconds), quiet: new QuietBudget(0) };
    const row = await measureLoad(server, cell, ['GETSEQ'], plan, () => {});
    process.stdout.write(
      `${args.join(' ') || 'durable'} -c ${cell.clients} -P ${cell.pipeline}: ${Math.round(row.rps)} req/s, ` +
        `${row.cpuUsPerRequest.toFixed(2)} µs CPU/req (profiling overhead included)\n`,
    );
    await server.stop();
  } finally {
    uninstall();
  }
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error(`no .cpuprofile in ${dir}: did the server exit cleanly?`);
  profileFile = path.join(dir, file);
}
process.stdout.write(`profile: ${profileFile}\n\n`);
summarize(JSON.parse(readFileSync(profileFile, 'utf8')) as CpuProfile);

function summarize(profile: CpuProfile): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  // Sample i lasts until sample i+1 (what the DevTools do); the last one gets nothing.
  const self = new Map<number, number>();
  for (let i = 0; i + 1 < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + profile.timeDeltas[i + 1]!);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const idle = [...self].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((a, [, t]) => a + t, 0);
  const busy = total - idle;

  const where = sourceLocator();
  const key = (f: CallFrame) => `${f.functionName || '(anonymous)'} ${where(f)}`;

  const selfByFn = new Map<string, number>();
  for (const [id, t] of self) {
    const k = key(byId.get(id)!.callFrame);
    selfByFn.set(k, (selfByFn.get(k) ?? 0) + t);
  }
  // Inclusive time per function, counting a function once per stack even when it recurses.
  const totalByFn = new Map<string, number>();
  const subtree = new Map<number, number>();
  const sum = (id: number): number => {
    const n = byId.get(id)!;
    let t = self.get(id) ?? 0;
    for (const c of n.children ?? []) t += sum(c);
    subtree.set(id, t);
    return t;
  };
  const rootNode = profile.nodes[0]!;
  sum(rootNode.id);
  const walk = (id: number, onPath: Set<string>) => {
    const n = byId.get(id)!;
    const k = key(n.callFrame);
    const fresh = !onPath.has(k);
    if (fresh) {
      totalByFn.set(k, (totalByFn.get(k) ?? 0) + subtree.get(id)!);
      onPath.add(k);
    }
    for (const c of n.children ?? []) walk(c, onPath);
    if (fresh) onPath.delete(k);
  };
  walk(rootNode.id, new Set());

  const pct = (t: number) => `${((100 * t) / busy).toFixed(1)}%`;
  const ms = (t: number) => (t / 1000).toFixed(0);
  process.stdout.write(`busy ${ms(busy)} ms of ${ms(total)} ms sampled (idle excluded from the percentages)\n\n`);
  const sorted = [...selfByFn].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]);
  process.stdout.write('Top self time, everything:\n\n');
  process.stdout.write(
    table(['function (source)', 'self ms', 'self %', 'total %'], sorted.slice(0, top).map(([k, t]) => [k, ms(t), pct(t), pct(totalByFn.get(k) ?? 0)]), ['l', 'r', 'r', 'r']) + '\n\n',
  );
  const ours = sorted.filter(([k]) => k.includes(' src/'));
  process.stdout.write("Our code (src/), by self time; total includes what it calls:\n\n");
  process.stdout.write(
    table(['function (source)', 'self ms', 'self %', 'total %'], ours.slice(0, top).map(([k, t]) => [k, ms(t), pct(t), pct(totalByFn.get(k) ?? 0)]), ['l', 'r', 'r', 'r']) + '\n',
  );
}

/** Maps a frame in dist/*.js to its TypeScript line through the emitted source map. */
function sourceLocator(): (f: CallFrame) => string {
  const maps = new Map<string, SourceMap | null>();
  return (f) => {
    if (!f.url) return '';
    let file: string;
    try {
      file = f.url.startsWith('file:') ? fileURLToPath(f.url) : f.url;
    } catch {
      return f.url;
    }
    if (!file.startsWith(root)) return file.startsWith('node:') ? file : path.basename(file);
    if (!maps.has(file)) {
      try {
        maps.set(file, new SourceMap(JSON.parse(readFileSync(`${file}.map`, 'utf8')) as ConstructorParameters<typeof SourceMap>[0]));
      } catch {
        maps.set(file, null);
      }
    }
    const map = maps.get(file);
    const entry = map?.findEntry(f.lineNumber, f.columnNumber);
    if (map && entry && 'originalSource' in entry && entry.originalSource) {
      const src = path.resolve(path.dirname(file), entry.originalSource);
      return `${path.relative(root, src)}:${entry.originalLine + 1}`;
    }
    return `${path.relative(root, file)}:${f.lineNumber + 1}`;
  };
}
