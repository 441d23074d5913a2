/**
 * A scripted stand-in for a server, for client tests: it decodes requests
 * with the server's own decoder and lets a script answer each one however it
 * likes (correctly, never, with garbage, by hanging up half-way).
 */
import net from 'node:net';
import tls from 'node:tls';
import { Decoder } from '../../src/protocol/decoder.js';
import { formatAddress } from '../../src/protocol/address.js';

export interface MockConnection {
  readonly socket: net.Socket;
  /** Requests seen on this connection so far. */
  readonly requests: string[][];
  /** How many reads the requests arrived in: shows whether the client coalesces writes. */
  readonly chunks: number;
  /** Writes raw bytes, e.g. `':1\r\n'`. */
  send(raw: string): void;
}

/** Called once per request; answer through `connection` (or do not). */
export type Script = (words: string[], connection: MockConnection) => void;

export interface MockServer {
  readonly port: number;
  /** `host:port`, `[host]:port` for IPv6 */
  readonly address: string;
  /** One entry per accepted connection, in order. */
  readonly connections: MockConnection[];
  /** Every request on every connection, in arrival order. */
  readonly requests: string[][];
  /** TCP connections accepted, whether or not their TLS handshake finished. */
  readonly accepted: number;
  /** Stops listening and destroys every connection. */
  close(): Promise<void>;
}

export interface MockOptions {
  /** Default 0: any free port. */
  readonly port?: number;
  /** Serve TLS with these options (key, cert, ...) instead of plain TCP. */
  readonly tls?: tls.TlsOptions;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** With `tls`: accepted connections wait this long before the handshake starts (a slow network or server). */
  readonly handshakeDelayMs?: number;
}

export async function startMockServer(script: Script, options: MockOptions = {}): Promise<MockServer> {
  const host = options.host ?? '127.0.0.1';
  const connections: MockConnection[] = [];
  const requests: string[][] = [];
  const onConnection = (socket: net.Socket): void => {
    const decoder = new Decoder();
    const connection = {
      socket,
      requests: [] as string[][],
      chunks: 0,
      send: (raw: string) => {
        if (!socket.destroyed) socket.write(raw);
      },
    };
    connections.push(connection satisfies MockConnection);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      connection.chunks++;
      decoder.feed(chunk, (words) => {
        connection.requests.push(words);
        requests.push(words);
        script(words, connection);
      });
    });
  };
  const server = options.tls === undefined
    ? net.createServer(onConnection)
    : tls.createServer(options.tls, onConnection);
  const delay = options.handshakeDelayMs;
  const raw: net.Socket[] = [];
  // The TLS server is handed each socket late; until then the client's hello waits unread.
  const listener = options.tls === undefined || delay === undefined
    ? server
    : net.createServer((socket) => {
      raw.push(socket);
      socket.on('error', () => {});
      const timer = setTimeout(() => server.emit('connection', socket), delay);
      socket.once('close', () => clearTimeout(timer));
    });
  let accepted = 0;
  listener.on('connection', () => accepted++);
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(options.port ?? 0, host, resolve);
  });
  const bound = (listener.address() as net.AddressInfo).port;
  return {
    port: bound,
    address: formatAddress({ host, port: bound }),
    connections,
    requests,
    get accepted() {
      return accepted;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of connections) c.socket.destroy();
        for (const socket of raw) socket.destroy();
        listener.close(() => resolve());
      }),
  };
}

/** A script answering like a healthy in-memory server (GETSEQ, GETSEQ_BATCH, CURRENT, PING, AUTH, INFO). */
export function counterScript(start = 1n): Script {
  let next = start;
  return (words, connection) => {
    const command = words[0]!.toUpperCase();
    switch (command) {
      case 'GETSEQ':
        connection.send(`:${next++}\r\n`);
        break;
      case 'GETSEQ_BATCH': {
        const first = next;
        next += BigInt(words[1]!);
        connection.send(`:${first}\r\n`);
        break;
      }
      case 'CURRENT':
        connection.send(`:${next}\r\n`);
        break;
      case 'PING':
        connection.send('+PONG\r\n');
        break;
      case 'AUTH':
        connection.send('+OK\r\n');
        break;
      case 'INFO': {
        const text = `# Server\r\nrole:standalone\r\n\r\n# Sequences\r\nsequence:name=default,current=${next},durable_mark=none\r\n`;
        connection.send(`$${Buffer.byteLength(text)}\r\n${text}\r\n`);
        break;
      }
      default:
        connection.send(`-ERR Unknown command '${words[0]}'\r\n`);
    }
  };
}

