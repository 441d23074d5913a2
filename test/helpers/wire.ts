/**
 * A raw TCP peer for byte-for-byte protocol tests: send exact bytes, read
 * until a condition holds or a deadline passes.
 */
import net from 'node:net';
import tls from 'node:tls';
import { parseInfo } from '../../src/client/info.js';

export class WireClient {
  /** What arrived, kept as chunks and joined only when read: expect() and waitClosed() take linear time. */
  private chunks: Buffer[] = [];
  private textCache: string | null = '';
  /** Bytes received since the last reset. */
  private size = 0;
  private waiters = new Set<() => void>();
  closed = false;
  /** The socket's error, if it had one (a refused TLS handshake, a reset). */
  error: Error | null = null;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.size += d.length;
      this.textCache = null;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', (err) => {
      this.error = err;
    });
  }

  /** A peer over a socket opened elsewhere (a TLS socket, say). */
  static wrap(socket: net.Socket): WireClient {
    return new WireClient(socket);
  }

  /**
   * A TLS peer on 127.0.0.1 (certificate checked for `localhost`), once its
   * handshake is done from the client's side, or the connection closed (a
   * refusal: see `error`).
   */
  static connectTls(port: number, options: tls.ConnectionOptions): Promise<WireClient> {
    return new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', servername: 'localhost', ...options, port });
      const peer = new WireClient(socket);
      socket.once('secureConnect', () => resolve(peer));
      socket.once('close', () => resolve(peer));
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host }, () => {
        s.off('error', reject);
        resolve(new WireClient(s));
      });
      s.once('error', reject);
    });
  }

  send(bytes: string | Buffer): void {
    this.socket.write(bytes);
  }

  /** Everything received so far, as latin1. */
  get text(): string {
    if (this.textCache === null) {
      const all = Buffer.concat(this.chunks);
      this.chunks = [all];
      this.textCache = all.toString('latin1');
    }
    return this.textCache;
  }

  /** Waits until `cond(received)` holds; rejects with what was received at the deadline. */
  async until(cond: (text: string) => boolean, timeoutMs = 5000, what = 'condition'): Promise<string> {
    await this.waitUntil(() => cond(this.text), timeoutMs, what);
    return this.text;
  }

  /** Waits until `check()` holds, woken by each chunk and by the close. */
  private async waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        const error = this.error === null ? '' : `, socket error ${this.error.message}`;
        throw new Error(`timed out waiting for ${what}; received ${JSON.stringify(this.text.slice(0, 500))}${error}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(left, 1000));
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.waiters.add(done);
      });
    }
  }

  /** Waits for exactly `expected` bytes in total and checks nothing else came (a close ends the wait). */
  async expect(expected: string, timeoutMs = 5000): Promise<void> {
    // Counted in bytes (latin1 text has one char per byte), so waiting does not decode what came.
    await this.waitUntil(() => this.size >= expected.length || this.closed, timeoutMs, JSON.stringify(expected));
    if (this.text !== expected) {
      throw new Error(`expected ${JSON.stringify(expected)}, received ${JSON.stringify(this.text)}`);
    }
  }

  /** Clears what was received, sends `request`, and expects exactly `expected` back. */
  async exchange(request: string | Buffer, expected: string, timeoutMs = 5000): Promise<void> {
    this.reset();
    this.send(request);
    await this.expect(expected, timeoutMs);
  }

  async waitClosed(timeoutMs = 5000): Promise<void> {
    await this.waitUntil(() => this.closed, timeoutMs, 'the server to close the connection');
  }

  /** Clears what was received, for the next exchange. */
  reset(): void {
    this.chunks = [];
    this.size = 0;
    this.textCache = '';
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const ws = this.waiters;
    this.waiters = new Set();
    for (const w of ws) w();
  }
}

/**
 * Whether `text` (latin1, one byte per character) holds one whole reply: a line,
 * or a bulk string's header, its `n` bytes of body and their CRLF.
 */
function completeReply(text: string): boolean {
  const eol = text.indexOf('\r\n');
  if (eol === -1) return false;
  if (!text.startsWith('$')) return true;
  const n = Number(text.slice(1, eol));
  return n < 0 || text.length >= eol + 2 + n + 2;
}

/** One request on a fresh connection, with a deadline; '' when nothing came back. */
export async function ask(port: number, request: string, timeoutMs = 2000): Promise<string> {
  let c: WireClient | null = null;
  try {
    c = await WireClient.connect(port);
    c.send(request);
    return await c.until(completeReply, timeoutMs);
  } catch {
    return c?.text ?? '';
  } finally {
    c?.close();
  }
}

/** A sequence's `current` and `durable_mark`, from an INFO asked over a fresh connection. */
export async function sequenceMarks(port: number, name = 'default'): Promise<{ current: bigint; mark: bigint }> {
  const info = parseInfo(await ask(port, 'INFO\r\n'));
  const seq = info.sequences.find((s) => s.name === name);
  if (seq?.durableMark == null) throw new Error(`INFO gives no durable mark for ${name}:\n${info.raw}`);
  return { current: seq.current, mark: seq.durableMark };
}

/** Encodes words as a RESP array of bulk strings, exactly as Redis clients do. */
export function resp(...words: string[]): string {
  return `*${words.length}\r\n` + words.map((w) => `$${Buffer.byteLength(w, 'latin1')}\r\n${w}\r\n`).join('');
}
