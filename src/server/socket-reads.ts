/**
 * How a client socket's bytes reach its connection.
 *
 * Node's default read path allocates a fresh 64 KiB buffer for every `read`
 * and passes each chunk through the stream machinery before a 'data' listener
 * sees it. At one request per read (`redis-benchmark -P 1`) that was about
 * 0.6 µs of the server's user CPU per request (a quarter of it), more than
 * decoding, counting and encoding together. Node has a leaner path built in: a socket made with the `onread`
 * option reads into a buffer it is given and calls a function with the byte
 * count, skipping both. It is public for sockets a program creates, but a
 * server's accepted sockets are created by Node, so it is switched on here
 * after the fact, with the same three fields the constructor sets.
 *
 * Those fields are internal, so they are looked up from a socket made with the
 * option, and the lean path is used only when they are all found and the
 * socket is a plain TCP one; otherwise the socket is read through 'data' as
 * before. Either way the connection sees the same bytes in the same order.
 */
import net, { type Socket } from 'node:net';
import tls from 'node:tls';

/** Receives each chunk read. The chunk is valid only during the call: copy what must outlive it. */
export type ReadSink = (chunk: Buffer) => void;

interface ReadFields {
  readonly buffer: symbol;
  readonly callback: symbol;
  readonly generator: symbol;
}

/**
 * One buffer for every socket: a read fills it and its callback runs to the
 * end before the event loop reads anything else, so no two reads overlap.
 */
const shared = Buffer.allocUnsafe(64 * 1024);

function findReadFields(): ReadFields | null {
  try {
    // The constructor takes `onread` too, though the typings list it only for connect().
    const options = { onread: { buffer: Buffer.alloc(1), callback: () => true } };
    const probe = new net.Socket(options as net.SocketConstructorOpts);
    const record = probe as unknown as Record<symbol, unknown>;
    const byName = new Map<string, symbol>();
    for (const s of Object.getOwnPropertySymbols(probe)) {
      if (s.description !== undefined) byName.set(s.description, s);
    }
    probe.destroy();
    const buffer = byName.get('kBuffer');
    const callback = byName.get('kBufferCb');
    const generator = byName.get('kBufferGen');
    if (buffer === undefined || callback === undefined || generator === undefined) return null;
    // The fields must hold what was given, not merely carry the expected names.
    if (record[buffer] !== options.onread.buffer || record[callback] !== options.onread.callback) return null;
    if (record[generator] !== null) return null;
    return { buffer, callback, generator };
  } catch {
    return null;
  }
}

const fields = findReadFields();

interface HandleWithUserBuffer {
  useUserBuffer?: (buf: Uint8Array) => void;
  reading?: boolean;
}

/**
 * Starts delivering the socket's input to `sink`. A plain TCP socket should
 * come from a server made with `pauseOnConnect`, so that nothing was read the
 * default way before the switch. Returns whether the lean path is in use.
 */
export function readInto(socket: Socket, sink: ReadSink): boolean {
  const f = fields;
  const lean = f !== null && canReadLean(socket, f);
  if (lean) {
    const record = socket as unknown as Record<symbol, unknown>;
    record[f.buffer] = shared;
    // A block body: a callback returning false would make Node stop reading without pausing the stream.
    record[f.callback] = (nread: number): void => {
      sink(shared.subarray(0, nread));
    };
    (socket as unknown as { _handle: HandleWithUserBuffer })._handle.useUserBuffer!(shared);
  } else {
    socket.on('data', sink);
  }
  socket.resume();
  return lean;
}

function canReadLean(socket: Socket, f: ReadFields): boolean {
  if (socket instanceof tls.TLSSocket) return false;
  const handle = (socket as unknown as { _handle?: HandleWithUserBuffer | null })._handle;
  if (handle == null || typeof handle.useUserBuffer !== 'function' || handle.reading === true) return false;
  // Bytes the default path already read would be emitted as 'data' with nobody listening.
  if (socket.readableLength > 0 || socket.readableEnded) return false;
  const record = socket as unknown as Record<symbol, unknown>;
  // Set by the constructor; an undefined generator would be called after every read.
  return record[f.generator] === null && record[f.buffer] == null;
}

/** Whether this Node.js offers the lean read path at all (the tests check it does). */
export const leanReadsAvailable = fields !== null;
