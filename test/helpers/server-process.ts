/**
 * Starts a real server process (the built CLI) on 127.0.0.1 port 0 and learns
 * its port from the "listening" log line. Every process started here is killed
 * when the test process exits, so a failing test cannot leak servers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { createInterface } from 'node:readline';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'dist/cli/main.js');

export interface ServerProcess {
  readonly port: number;
  readonly host: string;
  /** host:port */
  readonly address: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Every JSON log line seen so far. */
  readonly logs: Array<Record<string, unknown>>;
  /** Sends a signal (SIGTERM by default) and resolves with the exit code once it exits. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<void>;
  /** Resolves when the process has exited (code, or null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** Resolves with the first log line that matches, or rejects at the deadline. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

const live = new Set<ChildProcess>();
const killAll = () => {
  for (const c of live) {
    c.kill('SIGCONT');
    c.kill('SIGKILL');
  }
};
process.on('exit', killAll);

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** Deadline for the "listening" line. */
  timeoutMs?: number;
  /** Resolve when this log line appears instead of "listening" (e.g. group followers). */
  readyWhen?: (line: Record<string, unknown>) => boolean;
  /** Leave out the pinned `--host`, `--port` and `--metrics-port`: the CLI's own defaults, as `npm start` runs it. */
  defaults?: boolean;
  /** The server's working directory, where the default `--data-dir` (`./data`) would be. */
  cwd?: string;
}

/**
 * Runs `dolmeangi sequencer` with `--host=127.0.0.1 --port=0 --metrics-port=0`
 * in front of `args` (later flags win), unless `opts.defaults`.
 */
export async function startServerProcess(args: string[] = [], opts: StartOptions = {}): Promise<ServerProcess> {
  const child = spawn(
    process.execPath,
    [CLI, 'sequencer', ...(opts.defaults === true ? [] : ['--host=127.0.0.1', '--port=0', '--metrics-port=0']), ...args],
    { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  live.add(child);
  const logs: Array<Record<string, unknown>> = [];
  const watchers = new Set<(line: Record<string, unknown>) => void>();
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    stderr += d;
  });
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      line = { msg: text };
    }
    logs.push(line);
    for (const w of watchers) w(line);
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      live.delete(child);
      resolve(code);
    });
  });

  const waitForLog = (match: (line: Record<string, unknown>) => boolean, timeoutMs = 10_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const found = logs.find(match);
      if (found) return resolve(found);
      const timer = setTimeout(() => {
        watchers.delete(w);
        reject(new Error(`no matching log line within ${timeoutMs} ms; stderr: ${stderr.trim()}`));
      }, timeoutMs);
      const w = (line: Record<string, unknown>) => {
        if (!match(line)) return;
        clearTimeout(timer);
        watchers.delete(w);
        resolve(line);
      };
      watchers.add(w);
      void exited.then((code) => {
        if (!watchers.has(w)) return;
        clearTimeout(timer);
        watchers.delete(w);
        reject(new Error(`server exited with ${code} before the expected log line; stderr: ${stderr.trim()}`));
      });
    });

  const listening = await waitForLog(opts.readyWhen ?? ((l) => l.msg === 'listening'), opts.timeoutMs ?? 15_000).catch((err: unknown) => {
    // Nobody holds a handle to a server that never got ready: it must not outlive the failure.
    child.kill('SIGKILL');
    throw err;
  });
  const port = Number(listening.port);
  const host = '127.0.0.1';
  return {
    port,
    host,
    address: `${host}:${port}`,
    pid: child.pid!,
    child,
    logs,
    exited,
    waitForLog,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

export interface ProgramResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ProgramOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to stdin, which is then closed. */
  input?: string;
  timeoutMs?: number;
  /** Sent on the deadline (default SIGKILL); SIGTERM lets a program clean up after itself. */
  killSignal?: NodeJS.Signals;
  /** How stdout and stderr are decoded (default utf8). */
  encoding?: BufferEncoding;
}

/** Runs a program to completion with a deadline, and keeps everything it printed. */
export function runProgram(cmd: string, args: string[], opts: ProgramOptions = {}): Promise<ProgramResult> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding(opts.encoding ?? 'utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding(opts.encoding ?? 'utf8').on('data', (d: string) => (stderr += d));
    // A program that exits without reading its input must not fail the test with EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
    const timer = setTimeout(() => {
      child.kill(opts.killSignal ?? 'SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not exit within ${timeoutMs} ms; stdout: ${stdout}; stderr: ${stderr}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs the CLI to completion (for option errors and client commands). */
export function runCli(args: string[], opts: ProgramOptions = {}): Promise<ProgramResult> {
  return runProgram(process.execPath, [CLI, ...args], opts);
}
