/**
 * A one-shot RESP request for the bench's own checks (readiness, verifying
 * counts). Independent of the client library (connections, retries,
 * redirects): the bench must be able to check the server even while that
 * library is being changed. It shares only the pure request encoder.
 */
import net from 'node:net';
import { encodeCommand } from '../protocol/request-encoder.js';

/**
 * Sends one command on a fresh connection and resolves with the reply: the
 * whole line for `+`, `-` and `:` replies (type byte included), the body for a bulk string.
 */
export function query(port: number, words: readonly string[], timeoutMs = 5000, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host });
    let data = '';
    const done = (err: Error | null, reply?: string) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => done(new Error(`no reply to ${words[0]} within ${timeoutMs} ms`)), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('error', (err) => done(err));
    socket.on('close', () => done(new Error(`connection closed before a reply to ${words[0]}`)));
    socket.on('connect', () => socket.write(encodeCommand(words)));
    socket.on('data', (chunk: string) => {
      data += chunk;
      const eol = data.indexOf('\r\n');
      if (eol === -1) return;
      const line = data.slice(0, eol);
      if (line[0] !== '$') return done(null, line);
      const len = Number(line.slice(1));
      if (len < 0) return done(null, '');
      if (data.length >= eol + 2 + len + 2) done(null, data.slice(eol + 2, eol + 2 + len));
    });
  });
}

/** A reply that must be an integer: `:<n>`. */
export async function queryInteger(port: number, words: readonly string[]): Promise<bigint> {
  const reply = await query(port, words);
  if (!/^:-?\d+$/.test(reply)) throw new Error(`${words.join(' ')}: expected an integer reply, got '${reply}'`);
  return BigInt(reply.slice(1));
}
