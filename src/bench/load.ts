/**
 * One measured load: redis-benchmark at a given concurrency and pipeline
 * depth, with the server's CPU time read before and after so the cost per
 * request is the server's own.
 */
import { cpuSeconds, machineBusySeconds, rssBytes, selfAndChildrenCpuSeconds } from './proc.js';
import { redisBenchmark, type LoadResult } from './redis-benchmark.js';
import type { RunningServer } from './servers.js';
import { DISTURBED_PERCENT, type Cell, type LoadRow } from './results.js';

export interface Plan {
  /** Tiny fixed counts: checks the pipeline, measures nothing. */
  readonly smoke: boolean;
  /** Target length of each measured run. */
  readonly seconds: number;
  /** Shared by every run of one bench: how long runs may still wait for a quiet machine. */
  readonly quiet: QuietBudget;
}

/**
 * On a shared machine, other work comes and goes. Before a measured run, wait
 * (a little, and a bounded total per bench) for the machine to go quiet; a run
 * that still shares it is marked in the results rather than trusted.
 */
export class QuietBudget {
  constructor(private leftMs: number) {}

  /** Resolves once other processes used at most DISTURBED_PERCENT of a core over half a second, or the wait is over. */
  async wait(maxMs = 15_000): Promise<void> {
    const until = performance.now() + Math.min(maxMs, this.leftMs);
    for (;;) {
      const started = performance.now();
      const before = machineBusySeconds() - selfAndChildrenCpuSeconds();
      await new Promise((r) => setTimeout(r, 500));
      // The server is idle between runs, so whatever was busy was someone else.
      const busy = machineBusySeconds() - selfAndChildrenCpuSeconds() - before;
      const now = performance.now();
      this.leftMs = Math.max(0, this.leftMs - (now - started));
      if ((100 * busy * 1000) / (now - started) <= DISTURBED_PERCENT || now >= until) return;
    }
  }
}

/** However fast the server, no run asks for more than this. */
const MAX_REQUESTS = 20_000_000;
/** Runs disturbed by other processes are repeated, keeping the quietest, at most this many times in all. */
const ATTEMPTS = 3;
/** A calibration run shorter than this gives too coarse a rate to size the real run from. */
const MIN_CALIBRATION_SECONDS = 0.25;

/**
 * Calibrates (which also warms up the JIT and the connections' code paths),
 * then runs for about `plan.seconds`. `issued` is told every request sent, so
 * the caller can check afterwards that each one took a number.
 */
export async function measureLoad(
  server: RunningServer,
  cell: Cell,
  command: readonly string[],
  plan: Plan,
  issued: (requests: number) => void,
): Promise<LoadRow> {
  const run = async (requests: number, timeoutMs: number): Promise<LoadResult> => {
    const r = await redisBenchmark({ port: server.port, ...cell, requests, command, timeoutMs });
    issued(r.sent);
    return r;
  };
  // Every connection gets a few full pipelines, or the run measures connecting.
  const floor = cell.clients * cell.pipeline * 4;
  // redis-benchmark sends whole pipelines, so any other count overshoots and the tally would be off.
  const whole = (n: number) => Math.ceil(n / cell.pipeline) * cell.pipeline;
  let requests = whole(Math.max(floor, plan.smoke ? 200 : 500));
  let timeoutMs = 120_000;
  if (!plan.smoke) {
    for (let attempt = 0; ; attempt++) {
      const r = await run(requests, timeoutMs);
      if (requests / r.rps >= MIN_CALIBRATION_SECONDS || attempt === 4) {
        requests = whole(Math.min(MAX_REQUESTS, Math.max(floor, Math.round(r.rps * plan.seconds))));
        timeoutMs = Math.max(60_000, (requests / r.rps) * 5_000 + 30_000);
        break;
      }
      requests *= 8;
    }
  }
  let best: LoadRow | null = null;
  for (let attempt = 0; attempt < (plan.smoke ? 1 : ATTEMPTS); attempt++) {
    if (!plan.smoke) await plan.quiet.wait();
    const row = await measured(server, cell, command, requests, (n) => run(n, timeoutMs));
    if (best === null || row.otherCpuPercent < best.otherCpuPercent) best = row;
    if (best.otherCpuPercent <= DISTURBED_PERCENT) break;
  }
  return best!;
}

/** One run with the server's CPU, and everyone else's, read around it. */
async function measured(
  server: RunningServer,
  cell: Cell,
  command: readonly string[],
  requests: number,
  run: (requests: number) => Promise<LoadResult>,
): Promise<LoadRow> {
  const cpuBefore = cpuSeconds(server.pid);
  const oursBefore = selfAndChildrenCpuSeconds();
  const busyBefore = machineBusySeconds();
  const started = performance.now();
  const r = await run(requests);
  const seconds = (performance.now() - started) / 1000;
  const cpu = cpuSeconds(server.pid) - cpuBefore;
  // redis-benchmark has been reaped by now, so its CPU is in our children's times.
  const others = machineBusySeconds() - busyBefore - cpu - (selfAndChildrenCpuSeconds() - oursBefore);
  return {
    ...cell,
    command: command.join(' '),
    requests: r.requests,
    rps: r.rps,
    cpuUsPerRequest: (cpu * 1e6) / r.sent,
    avgMs: r.avgMs,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    rssBytes: rssBytes(server.pid),
    otherCpuPercent: Math.max(0, (100 * others) / seconds),
  };
}
