/**
 * Runs a throwaway etcd cluster (1 or 3 members) as child processes on
 * 127.0.0.1, for tests of group mode. Every member and data directory is
 * removed when the cluster is closed or, failing that, when the test process
 * exits, so a failing test cannot leak etcd processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePorts } from './ports.js';
import type { EtcdConnection } from '../../src/election/etcd.js';

/** How the tests reach a cluster: its endpoints, no credentials. */
export const etcdConnection = (endpoints: readonly string[]): EtcdConnection => ({ endpoints, username: null, password: null });

export interface EtcdClusterOptions {
  /** 1 or 3 members (default 1). */
  readonly size?: 1 | 3;
  /** Raft heartbeat, ms (default 100). */
  readonly heartbeatMs?: number;
  /**
   * Raft election timeout, ms (default 500). etcd raises every lease TTL to at
   * least 1.5 election timeouts (rounded up to a second), so 500 allows 1 s leases.
   */
  readonly electionMs?: number;
  /** Deadline for the cluster (or a restarted member) to become healthy, ms (default 20 s). */
  readonly startTimeoutMs?: number;
  /** etcd's --log-level (default warn); the tail of each member's log is kept for diagnostics. */
  readonly logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

export interface EtcdCluster {
  /** Client URLs, `http://127.0.0.1:<port>`, one per member, in member order. */
  readonly endpoints: readonly string[];
  readonly size: number;
  /** Sends a signal (SIGKILL by default); for a signal that ends the process, waits for the exit. */
  kill(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM, then waits for the exit (SIGKILL after 5 s). */
  stop(i: number): Promise<void>;
  /** Starts a stopped or killed member again on its old data directory and waits until it is healthy. */
  start(i: number): Promise<void>;
  /** Deletes a stopped member's data directory: started again, a lone member is a new, empty etcd. */
  wipe(i: number): void;
  /** SIGSTOP: the member keeps its sockets but answers nothing. */
  pause(i: number): void;
  /** SIGCONT. */
  resume(i: number): void;
  /** Whether member i answers /health with a leader. */
  healthy(i: number): Promise<boolean>;
  /** The index of the member that is the raft leader, as the running members see it (null: none). */
  leaderIndex(): Promise<number | null>;
  /** The last few KB of member i's log. */
  log(i: number): string;
  /** Kills every member and removes the data directories. Idempotent. */
  close(): Promise<void>;
}

interface Member {
  readonly name: string;
  readonly dataDir: string;
  readonly clientPort: number;
  readonly peerPort: number;
  child: ChildProcess | null;
  exited: Promise<void>;
  paused: boolean;
  /** The last few KB of the member's log, for error messages. */
  log: string;
}

const LOG_TAIL = 65536;
const live = new Set<ChildProcess>();
const dirs = new Set<string>();
process.on('exit', () => {
  for (const c of live) {
    c.kill('SIGCONT');
    c.kill('SIGKILL');
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Throws when no `etcd` executable is on PATH. */
function findEtcd(): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, 'etcd');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new Error("etcd not found on PATH: install it with 'apt-get install -y etcd-server' (Debian)");
}

export async function startEtcdCluster(opts: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const binary = findEtcd();
  // Another process may take a port between our release and etcd's bind; a fresh set of ports fixes that.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await tryStart(binary, opts);
    } catch (err) {
      lastError = err;
      if (!/address already in use/i.test(String((err as Error).message))) throw err;
    }
  }
  throw lastError;
}

async function tryStart(binary: string, opts: EtcdClusterOptions): Promise<EtcdCluster> {
  const size = opts.size ?? 1;
  const heartbeat = opts.heartbeatMs ?? 100;
  const election = opts.electionMs ?? 500;
  const startTimeout = opts.startTimeoutMs ?? 20_000;
  const root = mkdtempSync(path.join(os.tmpdir(), 'dolmeangi-etcd-'));
  dirs.add(root);
  const ports = await freePorts(size * 2);
  const members: Member[] = [];
  for (let i = 0; i < size; i++) {
    members.push({
      name: `m${i}`,
      dataDir: path.join(root, `m${i}`),
      clientPort: ports[2 * i]!,
      peerPort: ports[2 * i + 1]!,
      child: null,
      exited: Promise.resolve(),
      paused: false,
      log: '',
    });
  }
  const initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(',');
  const token = `dolmeangi-test-${process.pid}-${Date.now()}`;
  const endpoints = members.map((m) => `http://127.0.0.1:${m.clientPort}`);

  const spawnMember = (m: Member): void => {
    const args = [
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=http://127.0.0.1:${m.clientPort}`,
      `--advertise-client-urls=http://127.0.0.1:${m.clientPort}`,
      `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-cluster=${initialCluster}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=${token}`,
      `--heartbeat-interval=${heartbeat}`,
      `--election-timeout=${election}`,
      '--logger=zap',
      '--log-outputs=stderr',
      `--log-level=${opts.logLevel ?? 'warn'}`,
    ];
    const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    live.add(child);
    m.child = child;
    m.paused = false;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      m.log = (m.log + d).slice(-LOG_TAIL);
    });
    m.exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        live.delete(child);
        if (m.child === child) m.child = null;
        resolve();
      });
    });
  };

  const healthy = async (i: number): Promise<boolean> => {
    const m = members[i]!;
    try {
      const res = await fetch(`http://127.0.0.1:${m.clientPort}/health`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { health?: string };
      return body.health === 'true';
    } catch {
      return false;
    }
  };

  const waitHealthy = async (indexes: number[]): Promise<void> => {
    const deadline = performance.now() + startTimeout;
    for (;;) {
      for (const i of indexes) {
        if (members[i]!.child === null) {
          throw new Error(`etcd member ${members[i]!.name} exited during start-up:\n${members[i]!.log}`);
        }
      }
      const ok = await Promise.all(indexes.map(healthy));
      if (ok.every(Boolean)) return;
      if (performance.now() > deadline) {
        const logs = indexes.map((i) => `${members[i]!.name}:\n${members[i]!.log}`).join('\n');
        throw new Error(`etcd did not become healthy within ${startTimeout} ms:\n${logs}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const status = async (m: Member): Promise<{ member: string; leader: string } | null> => {
    if (m.child === null || m.paused) return null;
    try {
      const res = await fetch(`http://127.0.0.1:${m.clientPort}/v3/maintenance/status`, {
        method: 'POST',
        body: '{}',
        signal: AbortSignal.timeout(1000),
      });
      const body = (await res.json()) as { header?: { member_id?: string }; leader?: string };
      if (body.header?.member_id === undefined || body.leader === undefined) return null;
      return { member: body.header.member_id, leader: body.leader };
    } catch {
      return null;
    }
  };

  const leaderIndex = async (): Promise<number | null> => {
    const all = await Promise.all(members.map(status));
    const leader = all.find((s) => s !== null && s.leader !== '0')?.leader;
    const i = all.findIndex((s) => s !== null && s.member === leader);
    return i === -1 ? null : i;
  };

  const signalAndWait = async (m: Member, signal: NodeJS.Signals, graceMs: number): Promise<void> => {
    const child = m.child;
    if (child === null) return;
    if (m.paused) child.kill('SIGCONT');
    m.paused = false;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await m.exited;
    clearTimeout(timer);
  };

  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await Promise.all(members.map((m) => signalAndWait(m, 'SIGKILL', 1000)));
    rmSync(root, { recursive: true, force: true });
    dirs.delete(root);
  };

  const member = (i: number): Member => {
    const m = members[i];
    if (m === undefined) throw new Error(`no etcd member ${i}: the cluster has ${size}`);
    return m;
  };

  try {
    members.forEach(spawnMember);
    await waitHealthy(members.map((_, i) => i));
  } catch (err) {
    await close();
    throw err;
  }

  const pause = (i: number): void => {
    const m = member(i);
    m.child?.kill('SIGSTOP');
    m.paused = m.child !== null;
  };
  const resume = (i: number): void => {
    const m = member(i);
    m.child?.kill('SIGCONT');
    m.paused = false;
  };

  return {
    endpoints,
    size,
    healthy,
    leaderIndex,
    log: (i) => member(i).log,
    close,
    pause,
    resume,
    async kill(i, signal = 'SIGKILL') {
      if (signal === 'SIGSTOP') return pause(i);
      if (signal === 'SIGCONT') return resume(i);
      await signalAndWait(member(i), signal, 5000);
    },
    async stop(i) {
      await signalAndWait(member(i), 'SIGTERM', 5000);
    },
    async start(i) {
      const m = member(i);
      if (m.child !== null) throw new Error(`etcd member ${m.name} is already running`);
      spawnMember(m);
      await waitHealthy([i]);
    },
    wipe(i) {
      const m = member(i);
      if (m.child !== null) throw new Error(`etcd member ${m.name} is running`);
      rmSync(m.dataDir, { recursive: true, force: true });
    },
  };
}

