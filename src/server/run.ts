/**
 * Assembles a node from its config: store, sequence source, listeners. This is
 * the one place that knows every edge; the CLI and tests start servers here.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config.js';
import { ConfigError } from '../errors.js';
import { repeatReporter } from '../repeat-reporter.js';
import { formatAddress, parseAddress } from '../protocol/address.js';
import { MAX_WORD_BYTES } from '../core/limits.js';
import { Sequencer, type SequenceSource, type SequencerEvents } from '../core/sequencer.js';
import type { Readiness } from '../core/ports.js';
import { FileStore } from '../store/file.js';
import { SequencerServer } from './server.js';
import { readTlsFiles } from './tls-files.js';
import { leanReadsAvailable } from './socket-reads.js';
import { renderInfo } from './info.js';
import { digestConfiguredPassword } from '../commands/auth.js';
import { COMMAND_LABELS, type Services } from '../commands/index.js';
import { VERSION } from '../version.js';
import { createLogger, type Logger } from '../log.js';
import { Metrics } from '../http/metrics.js';
import { startOpsServer, type OpsServer } from '../http/server.js';

export interface RunningServer {
  readonly port: number;
  readonly tlsPort: number | null;
  /** The HTTP port of /metrics, /healthz and /readyz; null when --metrics-port=0. */
  readonly metricsPort: number | null;
  readonly server: SequencerServer;
  readonly source: SequenceSource;
  readonly mode: 'in-memory' | 'durable' | 'group';
  /** Whether this node can hand out numbers now, and if not, why (for /readyz). */
  readiness(): Readiness;
  /** Storage health, as INFO reports it. */
  persistence(): { state: 'ok' | 'failing' | 'none'; error: string | null };
  /**
   * Clean stop: stop accepting, answer what was read, persist exact next numbers.
   * Resolves false when those could not be stored (the next start skips the rest
   * of the reserved windows).
   */
  close(): Promise<boolean>;
  /**
   * During a clean stop: true once the exact next numbers are stored (or, in
   * memory, once the source is closed), while connections may still drain.
   */
  exactStored(): boolean;
}

export interface StartOptions {
  log?: Logger;
}

interface Backend {
  readonly source: SequenceSource;
  readonly mode: 'in-memory' | 'durable' | 'group';
  readonly store: string;
  /** The file store's commit thread: `main` (gapless) or `workers`; null for other stores. */
  readonly commitThread: 'main' | 'workers' | null;
  role(): string;
  /** Why storage writes fail right now, or null (always null in memory). */
  persistenceFailure(): string | null;
  /** Terms this member has served as its group's leader; a standalone node leads no group: 0. */
  termsServed(): number;
  readiness(): Readiness;
  extraInfo(): Array<[string, string]>;
  /**
   * Resolves false when the exact next numbers could not be stored; calls `stored`
   * once they are (a single node after releasing its directory too; a group leader
   * before it resigns), so that a second signal may exit 0 from then on.
   */
  close(stored?: () => void): Promise<boolean>;
}

export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(config.logLevel);
  const started = Date.now();
  const password = await readPassword(config);
  // Before the data directory is touched or a port bound: a bad file starts nothing.
  const tlsOptions = config.tlsPort === null ? null : await readTlsFiles(config);
  let server: SequencerServer | null = null;
  // Read only at scrape time, once the backend and the server exist.
  const metrics =
    config.metricsPort === 0
      ? null
      : new Metrics({
          version: VERSION,
          maxConnections: config.maxConnections,
          maxSequences: config.maxSequences,
          mode: () => backend.mode,
          sequences: () => backend.source.snapshot(),
          commands: () => server!.stats,
          connections: () => ({ open: server!.connectionCount, ...server!.counters }),
          ready: () => readiness().ready,
          persistenceUp: () => backend.persistenceFailure() === null,
          ...(config.etcd.length > 0
            ? { group: { prefix: config.etcdPrefix, leading: () => backend.role() === 'leader', termsServed: () => backend.termsServed() } }
            : {}),
        });
  const authFailures = repeatReporter((fields) => log.warn(fields, 'AUTH with a wrong password'), metrics === null ? undefined : () => metrics.authFailed());
  const acceptErrors = repeatReporter((fields) => log.warn(fields, 'failed to accept a client connection (it was dropped; others are served)'));
  const persistence = (): { state: 'ok' | 'failing' | 'none'; error: string | null } => {
    if (backend.mode === 'in-memory') return { state: 'none', error: null };
    const error = backend.persistenceFailure();
    return { state: error === null ? 'ok' : 'failing', error };
  };
  const backend = await openBackend(config, log, metrics);
  let shuttingDown = false;
  const readiness = (): Readiness => (shuttingDown ? { ready: false, reason: 'shutting down' } : backend.readiness());

  const services: Services = {
    source: backend.source,
    maxBatch: config.maxBatch,
    passwordDigest: password === null ? null : digestConfiguredPassword(password),
    info: () => {
      const p = persistence();
      return renderInfo({
        version: VERSION,
        mode: backend.mode,
        role: backend.role(),
        uptimeSeconds: Math.floor((Date.now() - started) / 1000),
        tcpPort: port,
        tlsPort,
        connectedClients: server!.connectionCount,
        maxConnections: config.maxConnections,
        rejectedConnections: server!.counters.rejected,
        totalConnections: server!.counters.accepted,
        store: backend.store,
        commitThread: backend.commitThread,
        persistence: p.state,
        persistenceError: p.error,
        reserve: config.inMemory ? null : config.reserve,
        extra: backend.extraInfo(),
        commandCalls: COMMAND_LABELS.map((label, i): [string, number] => [label, server!.stats.calls[i]!]),
        errorReplies: [...server!.stats.errors],
        sequences: backend.source.snapshot(),
      });
    },
    authFailed: () => authFailures.failed(),
  };
  server = new SequencerServer(services, {
    maxConnections: config.maxConnections,
    idleTimeoutMs: config.timeout * 1000,
    outputLimit: config.clientOutputLimit,
  });
  if (metrics !== null) server.onChunkHandled = metrics.chunkHandled;
  server.onAcceptError = (err) => acceptErrors.failed(err.message);
  let port = 0;
  let tlsPort: number | null = null;
  let ops: OpsServer | null = null;
  try {
    port = await server.listen(config.host, config.port);
    if (config.tlsPort !== null && tlsOptions !== null) {
      tlsPort = await server.listenTls(config.host, config.tlsPort, tlsOptions);
    }
    if (metrics !== null) {
      ops = await startOpsServer({
        host: config.host,
        port: config.metricsPort,
        metrics,
        readiness,
        refused: metrics.opsRefused,
      });
    }
  } catch (err) {
    await server.close(0);
    await backend.close();
    throw err;
  }
  log.info(
    {
      version: VERSION,
      host: config.host,
      port,
      tlsPort,
      metricsPort: ops?.port ?? null,
      mode: backend.mode,
      store: backend.store,
      dataDir: config.inMemory || config.etcd.length > 0 ? null : path.resolve(config.dataDir),
      reserve: String(config.reserve),
      initial: String(config.initial),
      maxConnections: config.maxConnections,
      maxBatch: String(config.maxBatch),
      maxSequences: config.maxSequences,
      timeout: config.timeout,
      clientOutputLimit: config.clientOutputLimit,
      logLevel: config.logLevel,
      auth: password !== null,
      leanReads: leanReadsAvailable,
    },
    'listening',
  );
  if (!leanReadsAvailable) {
    log.warn("this Node.js does not offer the lean read path; plain TCP clients are read through 'data', at some more CPU per request (see docs/design.md)");
  }

  let closing: Promise<boolean> | null = null;
  let storedExact = false;
  const srv = server;
  return {
    port,
    tlsPort,
    metricsPort: ops?.port ?? null,
    server: srv,
    source: backend.source,
    mode: backend.mode,
    readiness,
    persistence,
    close() {
      closing ??= (async () => {
        shuttingDown = true;
        log.info('shutting down: no new connections, answering requests already read');
        // The source closes once the requests read before the stop are answered, not after
        // every connection has closed: a group leader hands over while clients still drain.
        await srv.stopServing();
        const drained = srv.close();
        authFailures.stop();
        acceptErrors.stop();
        const exact = await backend.close(() => {
          storedExact = true;
        });
        await drained;
        // Last: /healthz answers while the process drains, /readyz says it is shutting down.
        await ops?.close();
        log.info({ exact }, 'stopped');
        return exact;
      })();
      return closing;
    },
    exactStored: () => storedExact,
  };
}

async function readPassword(config: Config): Promise<string | null> {
  const pw = await passwordText(config);
  // No client could send a longer one: the server reads at most this much of one word.
  if (pw !== null && Buffer.byteLength(pw) > MAX_WORD_BYTES) {
    // A password comes from an option given, and sources names where each given one came from.
    const option = config.sources[config.requirepass !== null ? 'requirepass' : 'requirepassFile']!;
    throw new ConfigError(option, `the password is ${Buffer.byteLength(pw)} bytes; clients can send at most ${MAX_WORD_BYTES} in AUTH`);
  }
  return pw;
}

async function passwordText(config: Config): Promise<string | null> {
  if (config.requirepass !== null) return config.requirepass;
  if (config.requirepassFile === null) return null;
  let text: string;
  try {
    text = await readFile(config.requirepassFile, 'utf8');
  } catch (err) {
    throw new ConfigError(config.sources.requirepassFile ?? '--requirepass-file', `cannot read ${config.requirepassFile}: ${(err as Error).message}`);
  }
  const pw = text.replace(/\r?\n$/, '');
  if (pw === '') throw new ConfigError(config.sources.requirepassFile ?? '--requirepass-file', `${config.requirepassFile} is empty`);
  return pw;
}

/** A failing store is retried every few seconds; while it fails the same way, a line a minute says enough. */
const STILL_FAILING_LOG_MS = 60_000;

/** What the core reports about storage, to the metrics only (a group member logs it its own way). */
function storeMetrics(metrics: Metrics | null): SequencerEvents {
  return { persisted: metrics?.persisted, persistFailed: metrics ? () => metrics.persistFailed() : undefined };
}

/** What the core reports about storage, to the log and the metrics. */
function sequencerEvents(log: Logger, metrics: Metrics | null): SequencerEvents {
  const counted = storeMetrics(metrics);
  let failures = 0;
  let loggedReason = '';
  let loggedAt = 0;
  return {
    persisted: counted.persisted,
    persistFailed: (err, retryInMs) => {
      counted.persistFailed?.(err, retryInMs);
      failures++;
      const now = Date.now();
      if (failures > 1 && err.message === loggedReason && now - loggedAt < STILL_FAILING_LOG_MS) return;
      loggedReason = err.message;
      loggedAt = now;
      log.error(
        { err: err.message, retryInMs, failures },
        failures === 1 ? 'persistence failing: numbers beyond the durable mark are refused until storage recovers' : 'persistence still failing',
      );
    },
    persistRecovered: (downForMs) => {
      log.warn({ downForMs: Math.round(downForMs), failures }, 'persistence recovered');
      failures = 0;
      loggedReason = '';
    },
  };
}

async function openBackend(config: Config, log: Logger, metrics: Metrics | null): Promise<Backend> {
  if (config.etcd.length > 0) return openGroup(config, log, storeMetrics(metrics));
  if (config.inMemory) {
    const seq = new Sequencer({ store: null, initial: config.initial, reserve: 0n, maxSequences: config.maxSequences });
    await seq.open();
    return {
      source: seq,
      mode: 'in-memory',
      store: 'memory',
      commitThread: null,
      role: () => 'standalone',
      termsServed: () => 0,
      persistenceFailure: () => null,
      readiness: () => ({ ready: true, reason: 'serving from memory' }),
      extraInfo: () => [],
      close: async (stored) => {
        // Nothing to store: once closed, a second signal may cut the drain short with status 0.
        const exact = await seq.close();
        if (exact) stored?.();
        return exact;
      },
    };
  }
  const dir = path.resolve(config.dataDir);
  const store = await FileStore.open(dir, {
    log: (msg, fields) => log.warn({ dataDir: dir, ...fields }, msg),
    // Gapless: every reply waits for the commit, so nothing is gained by leaving the main thread.
    blockingCommits: config.reserve === 0n,
  });
  const seq = new Sequencer({
    store,
    initial: config.initial,
    reserve: config.reserve,
    maxSequences: config.maxSequences,
    events: sequencerEvents(log, metrics),
  });
  let raised: string[];
  try {
    ({ raisedByInitial: raised } = await seq.open());
  } catch (err) {
    await store.close();
    throw err;
  }
  if (raised.length > 0) {
    log.warn({ sequences: raised.slice(0, 20), count: raised.length, initial: String(config.initial) }, '--initial is above the persisted mark: starting from --initial');
  }
  return {
    source: seq,
    mode: 'durable',
    store: store.description,
    commitThread: store.blockingCommits ? 'main' : 'workers',
    role: () => 'standalone',
    termsServed: () => 0,
    persistenceFailure: () => seq.persistenceFailure,
    readiness: () => {
      const e = seq.persistenceFailure;
      return e === null ? { ready: true, reason: 'serving' } : { ready: false, reason: e };
    },
    extraInfo: () => [],
    close: async (stored) => {
      const exact = await seq.close();
      if (!exact) log.error('could not persist exact next numbers; the next start resumes at the reserved marks (a gap, never a repeat)');
      await store.close();
      // After the directory is released: a second signal that exits now leaves no lock file behind.
      if (exact) {
        log.info('stored the exact next numbers');
        stored?.();
      }
      return exact;
    },
  };
}

/**
 * The address NOTLEADER replies name for this node: --advertise, or the bind
 * address and port; `guessed` when that is this machine's host name (bound to
 * every address), which clients may not resolve.
 */
function advertisedAddress(config: Config): { address: string; guessed: boolean } {
  if (config.advertise !== null) return { address: config.advertise, guessed: false };
  if (config.port === 0) {
    throw new ConfigError('--advertise', 'is needed in group mode with --port=0: clients must be told where the leader is');
  }
  const wildcard = config.host === '0.0.0.0' || config.host === '::';
  // Written as clients parse it: an IPv6 literal in brackets.
  if (!wildcard) return { address: formatAddress({ host: config.host, port: config.port }), guessed: false };
  return { address: `${os.hostname()}:${config.port}`, guessed: true };
}

/**
 * What NOTLEADER names on the TLS port: --advertise-tls, or the advertised host
 * with --tls-port; null without a TLS port. A TLS client sent to the plain port
 * could not connect.
 */
function advertisedTlsAddress(config: Config, advertise: string): string | null {
  if (config.tlsPort === null) return null;
  if (config.advertiseTls !== null) {
    if (config.advertiseTls === advertise) {
      throw new ConfigError(config.sources.advertiseTls ?? '--advertise-tls', `is the plain port's address too (${advertise}): name the TLS port`);
    }
    return config.advertiseTls;
  }
  if (config.tlsPort === 0) {
    throw new ConfigError('--advertise-tls', 'is needed in group mode with --tls-port=0: TLS clients must be told where the leader is');
  }
  const host = parseAddress(advertise, null)?.host;
  if (host === undefined) throw new ConfigError('--advertise-tls', `is needed: the host of '${advertise}' cannot be told`);
  return formatAddress({ host, port: config.tlsPort });
}

async function openGroup(config: Config, log: Logger, metricsEvents: SequencerEvents): Promise<Backend> {
  const { address: advertise, guessed } = advertisedAddress(config);
  const advertiseTls = advertisedTlsAddress(config, advertise);
  if (guessed) {
    // The TLS address takes the same host, unless given.
    const guessedTls = config.advertiseTls === null && advertiseTls !== null ? { advertiseTls } : {};
    log.warn({ advertise, ...guessedTls }, 'no --advertise given: clients are redirected to this host name; set --advertise if they cannot resolve it');
  }
  // Loaded only in group mode: the etcd client and its gRPC stack cost a
  // standalone server about 20 MiB of memory for nothing.
  const { startGroup } = await import('../group/node.js');
  const group = await startGroup(Object.freeze({ ...config, advertise, advertiseTls }), log, metricsEvents);
  return {
    source: group,
    mode: 'group',
    store: `etcd:${config.etcd.join(',')}${config.etcdPrefix}`,
    commitThread: null,
    role: () => group.leadership.role,
    persistenceFailure: () => group.persistenceFailure(),
    termsServed: () => group.termsServed(),
    readiness: () => group.readiness(),
    extraInfo: () => [['advertise', advertise], ...(advertiseTls === null ? [] : [['advertise_tls', advertiseTls] as [string, string]]), ...group.info()],
    close: (stored) => group.close(stored),
  };
}
