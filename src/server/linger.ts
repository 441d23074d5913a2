/**
 * The end of a goodbye: a socket we have ended (after QUIT, a protocol error, a
 * refusal) is destroyed after a grace period unless the peer closes first, so a
 * peer gets time to read the last reply but can never hold the socket for good.
 */
import type { Socket } from 'node:net';

export function destroyAfter(socket: Socket, ms: number): void {
  const timer = setTimeout(() => socket.destroy(), ms);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}
