/**
 * The operations port: GET /metrics (Prometheus text format), /healthz (the
 * process runs) and /readyz (this node can hand out numbers now). Nothing here
 * touches the sequences; it only reads what the node reports.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ListenError } from '../errors.js';
import type { Metrics } from './metrics.js';
import type { Readiness } from '../core/ports.js';

export interface OpsServerOptions {
  host: string;
  port: number;
  metrics: Pick<Metrics, 'render' | 'contentType'>;
  readiness(): Readiness;
  /** Called for each connection closed unanswered because of the limits below. */
  refused?: () => void;
  /** How long replies may wait unsent, none of them finished, before their connection is closed (default STALLED_MS). */
  stalledMs?: number;
}

export interface OpsServer {
  readonly port: number;
  close(): Promise<void>;
}

const TEXT = 'text/plain; charset=utf-8';

/** Per connection: requests waiting for replies, and when its unsent replies last moved. */
interface Progress {
  waiting: number;
  written: number;
  since: number;
}

/**
 * Connections the port holds at once, and from one peer address: scrapers and
 * probes need a few. Past either, new ones are closed at once, so an
 * unauthenticated port cannot take the file descriptors that clients of the
 * sequencer need; the limit per peer keeps one client filling the port from
 * failing the liveness probes that come from elsewhere.
 */
export const MAX_OPS_CONNECTIONS = 1024;
export const MAX_OPS_CONNECTIONS_PER_PEER = 16;

/** A render that takes longer is given up, so one stuck collector cannot block every later scrape. */
const RENDER_TIMEOUT_MS = 10_000;

/**
 * Requests one connection may have waiting for their replies. Scrapers and probes
 * send one at a time; a client that pipelines more is closed, as its replies would
 * all be held in memory at once (a /metrics text each).
 */
export const MAX_OPS_PIPELINED = 32;

/**
 * A connection whose replies have waited this long unsent, none of them finished
 * (Node counts a reply as sent when the kernel has taken all of it), is closed:
 * its client does not read. The request timeouts cover only receiving requests,
 * and its own requests can keep it looking busy.
 */
export const STALLED_MS = 15_000;

export async function startOpsServer(opts: OpsServerOptions): Promise<OpsServer> {
  // Scrapes that arrive while one is rendered share its text: a burst of them costs
  // one render, not one each on the thread that serves the sequences.
  let rendering: Promise<string> | null = null;
  const render = (): Promise<string> =>
    (rendering ??= withDeadline(() => opts.metrics.render()).finally(() => {
      rendering = null;
    }));
  const server = http.createServer(
    // Scrapers and probes send small requests quickly; anything slower is stuck or hostile.
    // The timeouts are checked every second, not every 30 s (Node's default).
    { headersTimeout: 5_000, requestTimeout: 10_000, connectionsCheckingInterval: 1_000 },
    (req, res) => handle(req, res, opts, render),
  );
  server.maxConnections = MAX_OPS_CONNECTIONS;
  server.on('drop', () => opts.refused?.());
  const perPeer = new Map<string, number>();
  const open = new Map<Socket, Progress>();
  server.on('connection', (socket) => {
    const peer = socket.remoteAddress ?? '';
    const n = (perPeer.get(peer) ?? 0) + 1;
    if (n > MAX_OPS_CONNECTIONS_PER_PEER) {
      socket.destroy();
      opts.refused?.();
      return;
    }
    perPeer.set(peer, n);
    open.set(socket, { waiting: 0, written: 0, since: 0 });
    socket.once('close', () => {
      open.delete(socket);
      const left = perPeer.get(peer)! - 1;
      if (left === 0) perPeer.delete(peer);
      else perPeer.set(peer, left);
    });
  });
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const p = open.get(req.socket);
    // Requests parsed from the same read as the one that closed it: counted once.
    if (p === undefined || req.socket.destroyed) return;
    if (++p.waiting > MAX_OPS_PIPELINED) {
      req.socket.destroy();
      opts.refused?.();
      return;
    }
    res.once('close', () => p.waiting--);
  });
  const stalledMs = opts.stalledMs ?? STALLED_MS;
  const watch = setInterval(() => {
    const now = performance.now();
    for (const [socket, p] of open) {
      if (socket.writableLength === 0 || socket.bytesWritten !== p.written) {
        p.written = socket.bytesWritten;
        p.since = now;
      } else if (now - p.since >= stalledMs) {
        socket.destroy();
        opts.refused?.();
      }
    }
  }, Math.min(1000, stalledMs / 4));
  watch.unref();
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      clearInterval(watch);
      reject(new ListenError('metrics', opts.host, opts.port, err));
    };
    server.once('error', onError);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // A failed accept (out of memory and the like) must not take the sequencer down with it.
  server.on('error', () => {});
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(watch);
        server.close(() => resolve());
        // Scrapers keep connections alive; close() alone would wait for them.
        server.closeAllConnections();
      }),
  };
}

function handle(req: http.IncomingMessage, res: http.ServerResponse, opts: OpsServerOptions, render: () => Promise<string>): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    reply(res, 405, 'method not allowed: use GET\n', { Allow: 'GET, HEAD' });
    return;
  }
  const path = pathOf(req.url ?? '/');
  switch (path) {
    case '/metrics':
      render().then(
        (text) => reply(res, 200, text, { 'Content-Type': opts.metrics.contentType }),
        (err: unknown) => reply(res, 500, `cannot collect metrics: ${(err as Error)?.message ?? err}\n`),
      );
      return;
    case '/healthz':
      reply(res, 200, 'ok\n');
      return;
    case '/readyz': {
      const { ready, reason } = opts.readiness();
      reply(res, ready ? 200 : 503, `${ready ? 'ready' : 'not ready'}: ${reason}\n`);
      return;
    }
    default:
      reply(res, 404, 'not found: try /metrics, /healthz or /readyz\n');
  }
}

function reply(res: http.ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'Content-Type': TEXT,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(body);
}

/** The path of a request target, in origin form (`/metrics?x`) or absolute form (`http://host/metrics`), as some proxies send. */
function pathOf(target: string): string {
  if (target.startsWith('/')) return target.split('?', 1)[0]!;
  try {
    return new URL(target).pathname;
  } catch {
    return target;
  }
}

function withDeadline(render: () => Promise<string>): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no metrics within ${RENDER_TIMEOUT_MS / 1000} s`)), RENDER_TIMEOUT_MS);
    timer.unref();
    Promise.resolve()
      .then(render)
      .then(resolve, reject)
      .finally(() => clearTimeout(timer));
  });
}
