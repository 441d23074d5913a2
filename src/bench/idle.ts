/**
 * What an idle connection costs the server: RSS before and after opening many
 * connections that each made one request (as a pooled client would) and then went quiet.
 */
import net from 'node:net';
import { rssBytes } from './proc.js';
import { HOST, type RunningServer } from './servers.js';

/** Opened this many at a time, well inside the default listen backlog. */
const WAVE = 100;
/** Lets the server finish allocating and the kernel account for it before reading RSS. */
const SETTLE_MS = 500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function idleConnectionMemory(
  server: RunningServer,
  connections: number,
): Promise<{ rssBeforeBytes: number; rssAfterBytes: number }> {
  await sleep(SETTLE_MS);
  const rssBeforeBytes = rssBytes(server.pid);
  const sockets: net.Socket[] = [];
  try {
    for (let opened = 0; opened < connections; opened += WAVE) {
      const wave = Math.min(WAVE, connections - opened);
      await Promise.all(Array.from({ length: wave }, () => openWithPing(server.port, sockets)));
    }
    await sleep(SETTLE_MS);
    return { rssBeforeBytes, rssAfterBytes: rssBytes(server.pid) };
  } finally {
    for (const s of sockets) s.destroy();
  }
}

/** Connects, sends an inline PING (both servers accept it) and resolves once +PONG is back. */
function openWithPing(port: number, sockets: net.Socket[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: HOST });
    sockets.push(socket);
    let reply = '';
    const timer = setTimeout(() => reject(new Error('no PONG within 10 s on an idle-test connection')), 10_000);
    socket.setEncoding('latin1');
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('data', (d: string) => {
      reply += d;
      if (!reply.includes('\r\n')) return;
      clearTimeout(timer);
      if (reply.startsWith('+PONG')) resolve();
      else reject(new Error(`expected +PONG on an idle-test connection, got '${reply.trim()}'`));
    });
  });
}
