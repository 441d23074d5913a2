/**
 * The TCP (and TLS) listeners: the connection cap, mutual TLS's check of client
 * certificates, and a graceful drain that stops accepting, answers what was
 * already read, then closes every socket.
 */
import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { Connection, type ConnectionEvents, type ConnectionLimits } from './connection.js';
import { destroyAfter } from './linger.js';
import { CommandStats, type Services } from '../commands/index.js';
import { error } from '../protocol/encoder.js';
import { CERTIFICATE_REFUSED, SERVER_FULL } from '../protocol/unasked-refusals.js';
import { ListenError } from '../errors.js';

const TOO_MANY = error('ERR', SERVER_FULL);
/** A refused client gets this long to read the error before its socket is destroyed. */
const REFUSED_LINGER_MS = 1000;
/** Refusals in flight past which a flood's extra sockets are closed without the error. */
const MAX_REFUSING = 1024;
/**
 * TLS sockets the listener holds beyond --max-connections: room for clients over
 * the cap to finish their handshake and read the refusal over TLS, as plain TCP
 * clients do. Past it, new ones are closed before any TLS, unanswered.
 */
const TLS_REFUSAL_ROOM = 16;
/** The longest a TLS handshake may take (less when --timeout is shorter). */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface ServerOptions extends ConnectionLimits {
  readonly maxConnections: number;
}

export interface ServerCounters {
  accepted: number;
  rejected: number;
  outputLimitDisconnects: number;
  /** Accepted connections read through the lean path (socket-reads.ts): every plain TCP one where Node offers it. */
  leanReads: number;
  /** Failed accepts Node.js reports (ENOMEM, ENOBUFS...; libuv handles EMFILE and ENFILE itself, unreported): those clients see a reset or a hang. */
  acceptErrors: number;
  /** TLS clients refused by mutual TLS: no certificate, or one that does not verify against --tls-ca. */
  certificateRefusals: number;
}

export class SequencerServer {
  readonly stats = new CommandStats();
  readonly counters: ServerCounters = { accepted: 0, rejected: 0, outputLimitDisconnects: 0, leanReads: 0, acceptErrors: 0, certificateRefusals: 0 };
  /** Told of each failed accept (for the log); the server serves on either way. */
  onAcceptError: ((err: Error) => void) | null = null;
  private readonly connections = new Set<Connection>();
  /** Refused sockets still delivering their error. */
  private refusing = 0;
  private readonly listeners: net.Server[] = [];
  /** Set by the first stopServing(): what close() waits for. */
  private stopping: { answered: Promise<void>; closed: Promise<void> } | null = null;
  private readonly events: ConnectionEvents = {
    closed: (conn: Connection) => this.connections.delete(conn),
    outputLimitExceeded: () => this.counters.outputLimitDisconnects++,
  };

  /** Observes how long each chunk of requests took (metrics); set before listening. */
  set onChunkHandled(fn: (ms: number) => void) {
    this.events.chunkHandled = fn;
  }

  constructor(
    private readonly services: Services,
    private readonly options: ServerOptions,
  ) {}

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Listens for plain TCP; resolves with the bound port (useful with port 0). */
  listen(host: string, port: number): Promise<number> {
    // allowHalfOpen: a client that shuts down its sending side still gets every reply it is owed.
    // pauseOnConnect: nothing is read before the connection chooses how to read (socket-reads.ts).
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) =>
      this.accept(socket),
    );
    return this.bind(server, 'clients', host, port);
  }

  /**
   * With `requestCert` (mutual TLS), the certificate is checked here, after the
   * handshake, rather than by OpenSSL in it: a refused client then reads why,
   * over TLS, instead of seeing its connection closed or an alert that names
   * no CA. Nothing it sends is acted on.
   */
  listenTls(host: string, port: number, options: tls.TlsOptions): Promise<number> {
    const idle = this.options.idleTimeoutMs;
    const handshakeTimeout = idle > 0 ? Math.min(idle, HANDSHAKE_TIMEOUT_MS) : HANDSHAKE_TIMEOUT_MS;
    const checkCertificates = options.requestCert === true;
    // Half-open only once secure: a client that hangs up mid-handshake must not leave
    // a socket waiting for a reply it can no longer ask for.
    const server = tls.createServer(
      { ...options, ...(checkCertificates ? { rejectUnauthorized: false } : {}), allowHalfOpen: false, handshakeTimeout },
      (socket) => {
        if (checkCertificates && !presentedValidCertificate(socket)) {
          this.counters.certificateRefusals++;
          this.refuse(socket, certificateRefusal(socket));
          return;
        }
        socket.allowHalfOpen = true;
        this.accept(socket);
      },
    );
    // Sockets still in their handshake are not Connections yet, so the cap in accept()
    // does not see them; this bounds them (new ones are closed unanswered: no TLS yet).
    server.maxConnections = this.options.maxConnections + TLS_REFUSAL_ROOM;
    // With a listener here node leaves the socket open, so a failed or timed-out
    // handshake would hold its descriptor (and a slot under maxConnections) forever.
    server.on('tlsClientError', (_err, socket) => socket.destroy());
    return this.bind(server, 'TLS clients', host, port);
  }

  /**
   * Stops accepting and begins each connection's clean stop (see Connection.shutdown).
   * Resolves once every request read before is answered, so the sequence source can
   * close while connections still refuse what arrives. Connections still open after
   * `graceMs` are closed.
   */
  stopServing(graceMs = 5000): Promise<void> {
    if (this.stopping === null) {
      for (const l of this.listeners) l.close();
      const stops = [...this.connections].map((c) => c.shutdown());
      const timer = setTimeout(() => {
        for (const c of this.connections) c.socket.destroy();
      }, graceMs);
      this.stopping = {
        answered: Promise.all(stops.map((s) => s.answered)).then(() => {}),
        closed: Promise.all(stops.map((s) => s.closed)).then(() => clearTimeout(timer)),
      };
    }
    return this.stopping.answered;
  }

  /** Stops accepting, lets each connection finish what it read, then closes it. */
  async close(graceMs = 5000): Promise<void> {
    await this.stopServing(graceMs);
    await this.stopping!.closed;
    await Promise.all(this.listeners.map((l) => (l.listening ? once(l, 'close') : undefined)));
  }

  private async bind(server: net.Server, what: string, host: string, port: number): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new ListenError(what, host, port, err));
      server.once('error', onError);
      server.listen({ host, port, backlog: 1024 }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    // Once listening, an error is a failed accept (ENOMEM, ENOBUFS...): it costs
    // that one client. Unhandled, it would end the process and every other client's service.
    server.on('error', (err) => {
      this.counters.acceptErrors++;
      this.onAcceptError?.(err);
    });
    this.listeners.push(server);
    return (server.address() as net.AddressInfo).port;
  }

  private accept(socket: Socket): void {
    if (this.connections.size >= this.options.maxConnections) {
      this.counters.rejected++;
      this.refuse(socket, TOO_MANY);
      return;
    }
    this.counters.accepted++;
    const conn = new Connection(socket, this.services, this.stats, this.options, this.events);
    if (conn.leanReads) this.counters.leanReads++;
    this.connections.add(conn);
  }

  /** Sends `reply` unasked and closes, acting on nothing the client sends. */
  private refuse(socket: Socket, reply: string): void {
    socket.on('error', () => {});
    if (this.refusing >= MAX_REFUSING) {
      socket.destroy();
      return;
    }
    this.refusing++;
    // Reading (and dropping) what the client sends lets its close be seen and keeps
    // the close graceful, so the error is not lost to a reset; the timer is not
    // reset by traffic, so a slow sender cannot keep a refused socket.
    socket.resume();
    socket.end(reply);
    destroyAfter(socket, REFUSED_LINGER_MS);
    socket.once('close', () => this.refusing--);
  }
}

function hasPeerCertificate(socket: tls.TLSSocket): boolean {
  return Object.keys(socket.getPeerCertificate()).length > 0;
}

/**
 * `authorized` alone is not enough: a TLS 1.3 session resumed from a ticket
 * that was given to a client without a certificate carries none, yet Node
 * reports it authorized (nodejs/node#35317). A refused client is given a ticket
 * before it is refused, so without the second check it could come back with
 * that ticket and be served.
 */
function presentedValidCertificate(socket: tls.TLSSocket): boolean {
  return socket.authorized && hasPeerCertificate(socket);
}

/** Why mutual TLS refused the client, and what to do, as one error reply. */
function certificateRefusal(socket: tls.TLSSocket): string {
  const why = hasPeerCertificate(socket) ? `(${String(socket.authorizationError)})` : '(none presented)';
  return error('ERR', `${CERTIFICATE_REFUSED} ${why}: this port takes only valid certificates signed by the CA of the server's --tls-ca`);
}
