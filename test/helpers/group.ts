/**
 * A group of dolmeangi processes on one etcd cluster, each reaching every etcd
 * member through its own TCP proxies so a test can cut one node off from etcd.
 */
import { startServerProcess, type ServerProcess } from './server-process.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';
import type { EtcdCluster } from './etcd-cluster.js';
import { ask } from './wire.js';
import { freePort } from './ports.js';

export interface GroupNodeProcess {
  readonly id: string;
  readonly port: number;
  readonly address: string;
  /** Its TLS port, when the group was started with `tls`. */
  readonly tlsPort: number | null;
  /** Where its /metrics, /healthz and /readyz answer. */
  readonly metricsPort: number;
  readonly proxies: TcpProxy[];
  proc: ServerProcess | null;
}

export interface SequencerGroup {
  readonly nodes: GroupNodeProcess[];
  /** host:port of every node, for clients. */
  readonly addresses: string[];
  start(i: number): Promise<void>;
  /** Asks every running node for INFO and returns the index of the one that says role:leader and serves. */
  leaderIndex(): Promise<number | null>;
  waitForLeader(timeoutMs?: number, not?: number): Promise<number>;
  /** Cuts node i off from every etcd member (or heals it). */
  cutOff(i: number, on: boolean): void;
  close(): Promise<void>;
}

export interface GroupOptions {
  size: number;
  prefix: string;
  leaseTtl?: number;
  reserve?: number;
  extraArgs?: string[];
  /** Every node also serves TLS on a port of its own (GroupNodeProcess.tlsPort), with this certificate. */
  tls?: { cert: string; key: string };
}

export async function startGroup(etcd: EtcdCluster, opts: GroupOptions): Promise<SequencerGroup> {
  const nodes: GroupNodeProcess[] = [];
  for (let i = 0; i < opts.size; i++) {
    const port = await freePort();
    const proxies: TcpProxy[] = [];
    for (const url of etcd.endpoints) {
      const u = new URL(url);
      proxies.push(await startTcpProxy({ host: u.hostname, port: Number(u.port) }));
    }
    const tlsPort = opts.tls ? await freePort() : null;
    nodes.push({ id: `n${i}`, port, address: `127.0.0.1:${port}`, tlsPort, metricsPort: await freePort(), proxies, proc: null });
  }
  const start = async (i: number) => {
    const n = nodes[i]!;
    n.proc = await startServerProcess([
      `--port=${n.port}`,
      `--metrics-port=${n.metricsPort}`,
      `--advertise=${n.address}`,
      `--node-id=${n.id}`,
      `--etcd=${n.proxies.map((p) => p.url).join(',')}`,
      `--etcd-prefix=${opts.prefix}`,
      `--lease-ttl=${opts.leaseTtl ?? 2}`,
      `--reserve=${opts.reserve ?? 1000}`,
      ...(n.tlsPort === null || !opts.tls ? [] : [`--tls-port=${n.tlsPort}`, `--tls-cert=${opts.tls.cert}`, `--tls-key=${opts.tls.key}`]),
      ...(opts.extraArgs ?? []),
    ]);
  };
  const leaderIndex = async (): Promise<number | null> => {
    const answers = await Promise.all(
      nodes.map(async (n) => {
        if (n.proc === null || n.proc.child.exitCode !== null || n.proc.child.signalCode !== null) return false;
        const info = await ask(n.port, 'INFO\r\n', 1000);
        return /\r\nrole:leader\r\n/.test(info);
      }),
    );
    const leaders = answers.flatMap((yes, i) => (yes ? [i] : []));
    return leaders.length === 1 ? leaders[0]! : null;
  };
  const group: SequencerGroup = {
    nodes,
    get addresses() {
      return nodes.map((n) => n.address);
    },
    start,
    leaderIndex,
    async waitForLeader(timeoutMs = 15_000, not?: number) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const i = await leaderIndex();
        if (i !== null && i !== not) {
          // A leader that has loaded its marks answers GETSEQ-free probes: CURRENT.
          const r = await ask(nodes[i]!.port, 'CURRENT\r\n', 1000);
          if (r.startsWith(':')) return i;
        }
        if (Date.now() > deadline) throw new Error(`no serving leader within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    cutOff(i, on) {
      for (const p of nodes[i]!.proxies) p.blackhole(on);
    },
    async close() {
      await Promise.all(
        nodes.map(async (n) => {
          if (n.proc) {
            n.proc.child.kill('SIGCONT');
            await n.proc.kill();
          }
          await Promise.all(n.proxies.map((p) => p.close()));
        }),
      );
    },
  };
  try {
    for (let i = 0; i < opts.size; i++) await startFresh(i);
  } catch (err) {
    // Proxies and started nodes would keep the test runner from ever exiting.
    await group.close();
    throw err;
  }
  return group;

  /** A first start; ports taken since freePort() picked them are picked again (up to three tries). */
  async function startFresh(i: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await start(i);
      } catch (err) {
        if (attempt >= 3 || !/in use/.test(String((err as Error).message))) throw err;
        const port = await freePort();
        const tlsPort = opts.tls ? await freePort() : null;
        nodes[i] = { ...nodes[i]!, port, address: `127.0.0.1:${port}`, tlsPort, proc: null };
      }
    }
  }
}
