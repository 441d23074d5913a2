/**
 * A TCP proxy on 127.0.0.1 in front of one target, that can cut the path the
 * way a network partition does: bytes stop flowing both ways, but neither side
 * sees a close or a reset, so only timeouts can tell. Lifting the blackhole
 * lets held bytes through, as a healed network would.
 */
import net from 'node:net';

export interface TcpProxy {
  /** The proxy's port on 127.0.0.1. */
  readonly port: number;
  /** `127.0.0.1:<port>` */
  readonly address: string;
  /** `http://127.0.0.1:<port>`, for clients that want a URL. */
  readonly url: string;
  /**
   * On: stop forwarding in both directions, keep every connection open, and
   * accept new connections without connecting them onwards. Off: forward again,
   * including whatever was held.
   */
  blackhole(on: boolean): void;
  /**
   * On: drop every connection and reset new ones at once, as a host whose
   * service is down does (calls fail fast instead of timing out). Off: accept
   * and forward again.
   */
  refuse(on: boolean): void;
  /** Destroys every connection and stops listening. Idempotent. */
  close(): Promise<void>;
}

interface Pair {
  readonly client: net.Socket;
  upstream: net.Socket | null;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let holed = false;
  let refusing = false;
  let closed = false;

  const drop = (pair: Pair): void => {
    pair.client.destroy();
    pair.upstream?.destroy();
    pairs.delete(pair);
  };

  // Not pipe(): pipe resumes a paused source on 'drain', which would leak bytes through the blackhole.
  const forward = (from: net.Socket, to: net.Socket): void => {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => {
          if (!holed) from.resume();
        });
      }
    });
  };

  const connectUpstream = (pair: Pair): void => {
    const upstream = net.connect(target.port, target.host);
    pair.upstream = upstream;
    upstream.setNoDelay(true);
    forward(pair.client, upstream);
    forward(upstream, pair.client);
    const end = (): void => {
      // Inside a partition nobody learns that the other side went away.
      if (!holed) drop(pair);
    };
    upstream.on('error', end);
    upstream.on('close', end);
    pair.client.on('close', end);
    pair.client.resume();
  };

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    client.on('error', () => {});
    if (refusing) {
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const pair: Pair = { client, upstream: null };
    pairs.add(pair);
    if (!holed) connectUpstream(pair);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    address: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    blackhole(on: boolean) {
      if (closed || on === holed) return;
      holed = on;
      for (const pair of [...pairs]) {
        if (on) {
          pair.client.pause();
          pair.upstream?.pause();
          continue;
        }
        if (pair.client.destroyed || pair.upstream?.destroyed === true) {
          drop(pair);
        } else if (pair.upstream === null) {
          connectUpstream(pair);
        } else {
          pair.client.resume();
          pair.upstream.resume();
        }
      }
    },
    refuse(on: boolean) {
      if (closed) return;
      refusing = on;
      if (on) for (const pair of [...pairs]) drop(pair);
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const pair of [...pairs]) drop(pair);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
