/**
 * Starts the servers under test on free loopback ports, each with its own
 * temporary directory, and guarantees they die with the bench: on a normal
 * end, on an error, on Ctrl-C (SIGINT) or SIGTERM, and on process exit.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { query } from './resp.js';

/**
 * The built CLI. Two levels up from this file is the package root both from
 * src/bench (run through tsx) and from dist/bench (run through `dolmeangi bench`),
 * so either way the bench measures the compiled server that users run.
 */
export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export const HOST = '127.0.0.1';

export interface RunningServer {
  readonly label: string;
  readonly pid: number;
  readonly port: number;
  /** The temporary directory it keeps its files in; removed on stop. */
  readonly dir: string;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

const live = new Set<ChildProcess>();
const dirs = new Set<string>();

function killEverything(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

/**
 * Makes every child this module starts die with the bench. Returns the undo,
 * for embedders that outlive one run. Ctrl-C also reaches the children (same
 * process group); killing them here covers SIGTERM and errors as well.
 */
export function installCleanup(): () => void {
  const onSignal = (signal: NodeJS.Signals) => {
    killEverything();
    process.stderr.write(`\nbench: ${signal}: stopped every server it started\n`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', killEverything);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('exit', killEverything);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    killEverything();
  };
}

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `dolmeangi-bench-${prefix}-`));
  dirs.add(dir);
  return dir;
}

function removeDir(dir: string): void {
  dirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

/** Spawns a child that is killed with the bench; keeps the tail of its output for error messages. */
function track(
  command: string,
  args: string[],
  stdout: 'pipe' | 'ignore',
): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(command, args, { stdio: ['ignore', stdout, 'pipe'] });
  live.add(child);
  let tail = '';
  const keep = (d: Buffer) => {
    tail = (tail + d.toString('utf8')).slice(-4000);
  };
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', (err) => {
      tail += `\n${err.message}`;
      live.delete(child);
      resolve(null);
    });
    child.once('exit', (code) => {
      live.delete(child);
      resolve(code);
    });
  });
  return { child, output: () => tail.trim(), exited };
}

function stopper(child: ChildProcess, exited: Promise<number | null>, dir: string) {
  return async (graceMs = 10_000): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const code = await exited;
    clearTimeout(timer);
    removeDir(dir);
    return code;
  };
}

export interface DolmeangiOptions {
  /** Options after `sequencer`; `--host`, `--port` and `--metrics-port=0` come first, so these win. */
  readonly args: readonly string[];
  /** Flags for node itself, e.g. `--cpu-prof`. */
  readonly nodeArgs?: readonly string[];
  /** Gives the server a `--data-dir` in a fresh temporary directory. */
  readonly dataDir?: boolean;
  /** After "listening", waits (up to 30 s) until this says the server serves, e.g. a group member leads. */
  readonly ready?: (port: number) => Promise<boolean>;
}

/** Starts `dolmeangi sequencer` on port 0 and learns its port from the JSON "listening" log line. */
export async function startDolmeangi(label: string, opts: DolmeangiOptions): Promise<RunningServer> {
  const dir = tempDir('dolmeangi');
  const args = [
    ...(opts.nodeArgs ?? []),
    CLI,
    'sequencer',
    `--host=${HOST}`,
    '--port=0',
    '--metrics-port=0',
    ...(opts.dataDir ? [`--data-dir=${path.join(dir, 'data')}`] : []),
    ...opts.args,
  ];
  const { child, output, exited } = track(process.execPath, args, 'pipe');
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} did not log "listening" within 20 s: ${output()}`)), 20_000);
    createInterface({ input: child.stdout! }).on('line', (text) => {
      let line: { msg?: unknown; port?: unknown };
      try {
        line = JSON.parse(text) as typeof line;
      } catch {
        return;
      }
      if (line.msg === 'listening' && typeof line.port === 'number') {
        clearTimeout(timer);
        resolve(line.port);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited with ${code} before listening: ${output() || '(no output)'}`));
    });
  }).then(async (port) => {
    const ready = opts.ready;
    const notReady = ready === undefined ? null : await answers(exited, 30_000, () => ready(port));
    if (notReady !== null) {
      throw new Error(`${label} listened on port ${port} but did not become ready within 30 s (${notReady}): ${output() || '(no output)'}`);
    }
    return port;
  }).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    await exited;
    removeDir(dir);
    throw err;
  });
  return { label, pid: child.pid!, port, dir, stop: stopper(child, exited, dir) };
}

/** A tool's version as `pattern` finds it in `<command> --version` (its first line otherwise); null when it is not installed. */
function toolVersion(command: string, pattern: RegExp): string | null {
  try {
    const out = execFileSync(command, ['--version'], { encoding: 'utf8' });
    return pattern.exec(out)?.[1] ?? out.trim().split('\n')[0]!;
  } catch {
    return null;
  }
}

/** Whether redis-server is on the PATH, and its version. */
export const redisVersion = (): string | null => toolVersion('redis-server', /v=(\S+)/);

/** Whether etcd is on the PATH, and its version. */
export const etcdVersion = (): string | null => toolVersion('etcd', /etcd Version:\s*(\S+)/);

/** A port that was free a moment ago; Redis cannot pick its own (port 0 turns TCP off). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Polls `probe` until it says yes (null), the process exits or `ms` pass (why
 * not: the last probe's error, when one threw). A probe that throws has not
 * answered yet.
 */
async function answers(exited: Promise<unknown>, ms: number, probe: () => Promise<boolean>): Promise<string | null> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + ms;
  let why = 'no answer';
  while (!gone && Date.now() < deadline) {
    try {
      if (await probe()) return null;
    } catch (err) {
      // Not serving yet; kept for the message if it never does.
      why = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return gone ? 'it exited' : why;
}

function logTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '(no log)';
  }
}

/**
 * Starts a server that cannot pick its own port, in a fresh temporary directory:
 * another process may take a free port before the server binds it, so `launch`
 * (which says whether the server answered, and why not) gets three tries.
 */
async function onFreePorts<T>(prefix: string, launch: (dir: string) => Promise<{ started: T } | { failed: Error }>): Promise<T> {
  let lastError: Error | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = tempDir(prefix);
    const r = await launch(dir);
    if ('started' in r) return r.started;
    lastError = r.failed;
    removeDir(dir);
  }
  throw lastError!;
}

/** Starts redis-server on a free loopback port, its files in a temporary directory. */
export function startRedis(label: string, args: readonly string[]): Promise<RunningServer> {
  return onFreePorts<RunningServer>('redis', async (dir) => {
    const port = await freePort();
    const log = path.join(dir, 'redis.log');
    const { child, output, exited } = track(
      'redis-server',
      ['--port', String(port), '--bind', HOST, '--dir', dir, '--daemonize', 'no', '--logfile', log, ...args],
      'ignore',
    );
    if ((await answers(exited, 15_000, async () => (await query(port, ['PING'], 1000)) === '+PONG')) === null) {
      return { started: { label, pid: child.pid!, port, dir, stop: stopper(child, exited, dir) } };
    }
    child.kill('SIGKILL');
    await exited;
    return { failed: new Error(`${label} did not answer PING on port ${port}: ${output() || logTail(log)}`) };
  });
}

export interface RunningEtcd {
  readonly pid: number;
  readonly url: string;
  stop(): Promise<number | null>;
}

/** A one-member etcd on free loopback ports, its data in a temporary directory: a group for the leader to lead. */
export function startEtcd(): Promise<RunningEtcd> {
  return onFreePorts<RunningEtcd>('etcd', async (dir) => {
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const url = `http://${HOST}:${clientPort}`;
    const { child, output, exited } = track(
      'etcd',
      [
        '--name=bench',
        `--data-dir=${path.join(dir, 'data')}`,
        `--listen-client-urls=${url}`,
        `--advertise-client-urls=${url}`,
        `--listen-peer-urls=http://${HOST}:${peerPort}`,
        `--initial-advertise-peer-urls=http://${HOST}:${peerPort}`,
        `--initial-cluster=bench=http://${HOST}:${peerPort}`,
        '--log-level=warn',
      ],
      'ignore',
    );
    const healthy = async () => {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      return ((await res.json()) as { health?: string }).health === 'true';
    };
    if ((await answers(exited, 20_000, healthy)) === null) return { started: { pid: child.pid!, url, stop: stopper(child, exited, dir) } };
    child.kill('SIGKILL');
    await exited;
    return { failed: new Error(`etcd did not become healthy on ${url}: ${output() || '(no output)'}`) };
  });
}
