/**
 * A bounded load generator that records every request in a History: raw
 * sockets, a fixed number of requests in flight per connection, replies
 * parsed by hand (an oracle independent of the project's own decoders).
 */
import net from 'node:net';
import type { History, Op } from './history.js';

export interface LoadOptions {
  port: number;
  host?: string;
  /** Connections to open. */
  connections: number;
  /** Requests in flight per connection. */
  depth: number;
  /** Stop after this many requests in total (a bound even if nothing else stops it). */
  maxRequests: number;
  /** Stop at this deadline (ms since the epoch). */
  deadline: number;
  /** Every n-th request is a GETSEQ_BATCH of `batchSize` (0: never). */
  batchEvery?: number;
  batchSize?: bigint;
  sequence?: string;
  /** Prefix of client ids in the history. */
  label: string;
  /** Called after each acknowledged reply, e.g. to kill the server at a chosen moment. */
  onAck?: (acked: number) => void;
}

export interface LoadResult {
  sent: number;
  acked: number;
  refused: number;
  lost: number;
}

export function runLoad(history: History, opts: LoadOptions): { done: Promise<LoadResult>; stop(): void } {
  const result: LoadResult = { sent: 0, acked: 0, refused: 0, lost: 0 };
  let stopped = false;
  const sockets: net.Socket[] = [];
  const conns: Promise<void>[] = [];
  for (let i = 0; i < opts.connections; i++) {
    conns.push(
      new Promise<void>((resolve) => {
        const client = `${opts.label}/c${i}`;
        const pending: Op[] = [];
        let buffered = '';
        const socket = net.connect({ port: opts.port, host: opts.host ?? '127.0.0.1' });
        sockets.push(socket);
        socket.setNoDelay(true);
        socket.setEncoding('latin1');
        const fill = () => {
          let out = '';
          while (!stopped && pending.length < opts.depth && result.sent < opts.maxRequests && Date.now() < opts.deadline) {
            const n = ++result.sent;
            const batch = opts.batchEvery ? n % opts.batchEvery === 0 : false;
            const count = batch ? (opts.batchSize ?? 10n) : 1n;
            const seq = opts.sequence ?? 'default';
            pending.push(history.begin(client, count, seq));
            out += batch ? `GETSEQ_BATCH ${count} ${seq}\r\n` : `GETSEQ ${seq}\r\n`;
          }
          if (out) socket.write(out);
          else if (pending.length === 0) socket.end();
        };
        socket.on('connect', fill);
        socket.on('data', (chunk: string) => {
          buffered += chunk;
          let nl: number;
          while ((nl = buffered.indexOf('\r\n')) !== -1) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 2);
            const op = pending.shift();
            if (!op) {
              socket.destroy(new Error(`unexpected reply ${line}`));
              return;
            }
            if (line.startsWith(':')) {
              history.ok(op, BigInt(line.slice(1)));
              result.acked++;
              opts.onAck?.(result.acked);
            } else {
              history.refused(op, line);
              result.refused++;
            }
          }
          fill();
        });
        socket.on('error', () => {});
        socket.on('close', () => {
          for (const op of pending.splice(0)) {
            history.lost(op, 'connection closed');
            result.lost++;
          }
          resolve();
        });
      }),
    );
  }
  return {
    done: Promise.all(conns).then(() => result),
    stop() {
      stopped = true;
      for (const s of sockets) if (!s.destroyed && s.readyState === 'open') s.end();
    },
  };
}
