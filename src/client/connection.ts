/**
 * One client socket: requests go out pipelined, replies come back in order
 * and settle the oldest pending request. Requests made in the same tick leave
 * in one write. Knows nothing of servers lists, redirects or retries.
 */
import net from 'node:net';
import tls from 'node:tls';
import { ReplyDecoder, type Reply } from '../protocol/reply-decoder.js';
import { encodeCommand } from '../protocol/request-encoder.js';
import { type Address, formatAddress } from '../protocol/address.js';
import { ConnectionClosedError, ReplyProtocolError, ServerError, TimeoutError, fromWire, isCertificateRefused, isConnectionRefusal } from './errors.js';
import { Fifo } from './fifo.js';

export interface ConnectOptions {
  /** TLS options, or null for plain TCP. */
  readonly tls: tls.ConnectionOptions | null;
  readonly connectTimeoutMs: number;
  /** Aborting it gives up a connection attempt under way (the client was closed). */
  readonly signal?: AbortSignal;
  /** Called once when the socket is gone, whatever the reason. */
  readonly onClose?: (connection: Connection) => void;
}

/** Detects half-open connections (peer host gone) when no request is waiting to time out. */
const KEEPALIVE_MS = 30_000;

/** One request awaiting its reply; it alone settles its promise and owns its timer. */
class PendingRequest {
  private timer: NodeJS.Timeout | undefined;
  private settled = false;

  constructor(
    readonly command: string,
    /** Whether its timing out shows the server stalls, so the connection is dropped. */
    readonly dropOnTimeout: boolean,
    /** The kind of reply it takes besides an error; undefined takes any. */
    readonly expected: Reply['type'] | undefined,
    private readonly resolve: (reply: Reply) => void,
    private readonly reject: (err: Error) => void,
  ) {}

  startTimer(ms: number, onTimeout: (request: PendingRequest) => void): void {
    this.timer = setTimeout(onTimeout, ms, this);
  }

  /** Returns false when it had already settled (it timed out): nobody waits for this reply. */
  succeed(reply: Reply): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.timer);
    this.resolve(reply);
    return true;
  }

  fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.reject(err);
  }
}

export class Connection {
  /** `host:port`, for messages. */
  readonly address: string;
  /** Resolves once the socket is fully closed. */
  readonly closed: Promise<void>;
  private readonly socket: net.Socket;
  private readonly decoder = new ReplyDecoder();
  private readonly pending = new Fifo<PendingRequest>();
  /**
   * Entries of `pending` whose callers still wait. A request that timed out
   * without dropping the connection keeps its place (its reply is still read),
   * but a retiring connection does not wait for that reply.
   */
  private awaited = 0;
  /** Encoded requests not yet written; they are the newest `unsent` entries of `pending`. */
  private out = '';
  private unsent = 0;
  private flushScheduled = false;
  private retiring = false;
  private isClosed = false;
  /** Why the connection is being torn down, given to every request still pending. */
  private fatal: Error | null = null;
  private socketError: Error | null = null;
  /** No reply has arrived yet: a server's unasked refusal (full, or of our certificate) can only come first. */
  private firstReply = true;

  /** Connects (and completes the TLS handshake) within `connectTimeoutMs`. */
  static open(address: Address, options: ConnectOptions): Promise<Connection> {
    const text = formatAddress(address);
    return new Promise((resolve, reject) => {
      const socket = options.tls === null
        ? net.connect({ host: address.host, port: address.port })
        : tls.connect({ ...options.tls, host: address.host, port: address.port });
      const done = (err: Error | null): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        socket.off('close', onEarlyClose);
        socket.off(options.tls === null ? 'connect' : 'secureConnect', onConnect);
        if (err === null) {
          resolve(new Connection(socket, text, options));
        } else {
          socket.destroy();
          reject(err);
        }
      };
      const onConnect = (): void => done(null);
      const onError = (err: Error): void => {
        if (isCertificateError(err)) done(certificateError(text, err));
        else if (tlsHandshakeRefusal(err)) done(new ClientCertificateRefusedError(text, err));
        else done(err);
      };
      const onEarlyClose = (): void => done(new Error(`connection to ${text} closed while connecting`));
      const onAbort = (): void => done(new Error(`gave up connecting to ${text}: the client was closed`));
      const timer = setTimeout(
        () => done(new TimeoutError(`could not connect to ${text} within ${options.connectTimeoutMs} ms: check the address and that the server runs, or raise connectTimeoutMs`)),
        options.connectTimeoutMs,
      );
      socket.once(options.tls === null ? 'connect' : 'secureConnect', onConnect);
      socket.once('error', onError);
      socket.once('close', onEarlyClose);
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort);
    });
  }

  private constructor(socket: net.Socket, address: string, options: ConnectOptions) {
    this.socket = socket;
    this.address = address;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => {
      this.socketError = err;
    });
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.isClosed = true;
        this.failAll();
        options.onClose?.(this);
        resolve();
      });
    });
  }

  /**
   * False once the connection is retiring or gone: send no more requests on it.
   * Gone counts from the socket's destruction (by us, or by Node after a socket
   * error), a tick or more before its 'close' event.
   */
  get usable(): boolean {
    return !this.retiring && !this.isClosed && !this.socket.destroyed && this.fatal === null;
  }

  /**
   * Sends one command; resolves with its reply, error replies included.
   * Rejects with TimeoutError after `timeoutMs` (and then, with `dropOnTimeout`,
   * drops the connection: a server that stalls on one request stalls on all that
   * follow), ConnectionClosedError, or ReplyProtocolError. Without it, a request
   * that timed out fails alone and keeps its place: its late reply is read and dropped.
   * A reply neither an error nor of the `expected` kind rejects with
   * ReplyProtocolError and drops the connection, failing the requests behind it:
   * their replies may not be the answers they seem to be.
   */
  send(words: readonly string[], timeoutMs: number, dropOnTimeout = true, expected?: Reply['type']): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const request = new PendingRequest(words[0] ?? '', dropOnTimeout, expected, resolve, reject);
      if (!this.usable) {
        request.fail(this.closedError(false));
        return;
      }
      // Encoded first: a request queued without its bytes would take the next request's reply.
      const frame = encodeCommand(words);
      request.startTimer(timeoutMs, this.onTimeout);
      this.pending.push(request);
      this.awaited++;
      this.out += frame;
      this.unsent++;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        process.nextTick(this.flush);
      }
    });
  }

  /**
   * Sends nothing more; closes the socket once every request still waited for
   * has its reply or has timed out. Closing then needs nothing more from the
   * server, so a paused server cannot hold it open.
   */
  retire(): void {
    this.retiring = true;
    if (this.awaited === 0) this.socket.destroy();
  }

  /** Closes at once; pending requests fail with ConnectionClosedError. */
  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Closes at once because the server cannot be trusted (it answered with the
   * wrong kind of reply): the replies still due on it could belong to other
   * requests than they seem to. Pending requests fail with ConnectionClosedError
   * giving `reason`; those already sent may have issued numbers.
   */
  abandon(reason: string): void {
    if (this.fatal === null && !this.isClosed) this.tearDown(new Error(reason));
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    // Written into a destroyed socket, the bytes go nowhere: left counted as unsent, the
    // requests fail as never sent when 'close' comes, and may be sent again elsewhere.
    if (this.out === '' || this.isClosed || this.socket.destroyed) return;
    this.socket.write(this.out);
    this.out = '';
    this.unsent = 0;
  };

  private onData(chunk: Buffer): void {
    if (this.fatal !== null) return;
    const problem = this.decoder.feed(chunk, this.onReply);
    if (problem !== null) this.tearDown(new ReplyProtocolError(this.address, problem));
    else if (this.fatal === null && this.retiring && this.awaited === 0) this.socket.destroy();
  }

  private readonly onReply = (reply: Reply): void => {
    const first = this.firstReply;
    this.firstReply = false;
    if (first && reply.type === 'error' && isConnectionRefusal(reply.message)) {
      // Sent unasked as the server accepts, before it closes without reading: it is
      // no request's answer, and every request may safely go to another server.
      this.tearDown(fromWire(reply.code, reply.message));
      return;
    }
    const request = this.pending.shift();
    if (request === undefined) {
      if (this.fatal === null) this.tearDown(new ReplyProtocolError(this.address, 'a reply arrived that no request was waiting for'));
      return;
    }
    if (request.expected !== undefined && reply.type !== 'error' && reply.type !== request.expected) {
      // Checked here, not by the caller: the replies behind it in the same read would be taken first.
      const problem = `unexpected ${describeReply(reply)} in reply to ${request.command}`;
      request.fail(new ReplyProtocolError(this.address, problem));
      this.awaited--;
      this.abandon(`${this.address} sent an ${problem}`);
      return;
    }
    if (request.succeed(reply)) this.awaited--;
  };

  private readonly onTimeout = (request: PendingRequest): void => {
    const lostNumbers = request.command.toUpperCase().startsWith('GETSEQ')
      ? ' Numbers it may have issued are skipped, never handed out again.'
      : '';
    // AUTH is part of connecting: it has what is left of connectTimeoutMs (SequencerClient.open).
    const [which, option] = request.command === 'AUTH' ? ['connect', 'connectTimeoutMs'] : ['request', 'requestTimeoutMs'];
    this.awaited--;
    request.fail(new TimeoutError(
      `no reply to ${request.command} from ${this.address} within the ${which} timeout: ` +
        `the server is slow, paused or unreachable; check it, or raise ${option}.${lostNumbers}`,
    ));
    if (request.dropOnTimeout) {
      this.tearDown(new Error(`a ${request.command} request timed out, so the connection was dropped`));
    } else if (this.retiring && this.awaited === 0) {
      this.socket.destroy();
    }
  };

  /**
   * The server refused the connection before reading anything (its unasked error is
   * the only ServerError a connection tears down with): no request was acted on.
   */
  private get refused(): boolean {
    return this.fatal instanceof ServerError || (this.firstReply && tlsHandshakeRefusal(this.socketError));
  }

  /** Fails every pending request with `reason` (via failAll on close) and closes the socket. */
  private tearDown(reason: Error): void {
    this.fatal = reason;
    this.failAll();
    this.socket.destroy();
  }

  private failAll(): void {
    const unsent = this.unsent;
    this.out = '';
    this.unsent = 0;
    const requests = this.pending.drain();
    this.awaited = 0;
    requests.forEach((request, i) => {
      const sent = !this.refused && i < requests.length - unsent;
      // Garbage is the first request's reply gone wrong; those behind it only lose their connection
      // (and CURRENT, PING and INFO are then resent, as after any drop).
      request.fail(i === 0 && this.fatal instanceof ReplyProtocolError ? this.fatal : this.closedError(sent));
    });
  }

  private closedError(requestSent: boolean): ConnectionClosedError {
    const why = this.fatal?.message ?? this.socketError?.message ?? (this.retiring ? 'the client retired it' : 'the server closed it');
    const certificate = !requestSent && this.refusedOurCertificate;
    const advice = requestSent
      ? 'The request may have reached the server: a GETSEQ or GETSEQ_BATCH may have issued numbers that are now skipped, never handed out again.'
      : certificate
        ? 'The server refused this client\'s TLS certificate before reading the request: nothing was done.'
        : this.refused
          ? 'The server refused the connection before reading the request; it is safe to retry.'
          : 'The request was never sent; it is safe to retry.';
    // A refusal by alert is given the same advice as one in the handshake (Connection.open).
    const alert = certificate && !(this.fatal instanceof ServerError) ? new ClientCertificateRefusedError(this.address, this.socketError!) : null;
    return new ConnectionClosedError(`connection to ${this.address} closed before the reply arrived (${alert?.message ?? why}). ${advice}`, {
      requestSent,
      cause: alert ?? this.fatal ?? this.socketError ?? undefined,
    });
  }

  /** Refused as a whole (see `refused`) for this client's certificate, by the server's reply or a TLS alert. */
  private get refusedOurCertificate(): boolean {
    if (!this.refused) return false;
    return this.fatal instanceof ServerError ? isCertificateRefused(this.fatal.serverMessage) : tlsHandshakeRefusal(this.socketError);
  }
}

/**
 * A TLS alert about the handshake or our certificate (a server with --tls-ca
 * refusing a client without one). Under TLS 1.3 it can arrive after our first
 * request was written, but the server refused the session before reading it.
 */
function tlsHandshakeRefusal(err: Error | null): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code ?? '';
  return code.startsWith('ERR_SSL_') && /ALERT_(CERTIFICATE|HANDSHAKE|UNKNOWN_CA|BAD_CERTIFICATE)/.test(code);
}

/**
 * A server refused this client's certificate (or its lack of one) with a TLS
 * alert: in the handshake (TLS 1.2), or just after it (TLS 1.3, when our first
 * request may already be written). A dolmeangi server says so in a reply instead,
 * a ServerError; see certificateRefusalIn.
 */
export class ClientCertificateRefusedError extends Error {
  constructor(address: string, alert: Error) {
    super(
      `${address} refused this client's TLS certificate (${alert.message.trim()}): set one signed by the CA the server trusts as tls.cert and tls.key (CLI: --tls-cert, --tls-key)`,
      { cause: alert },
    );
  }
}

/**
 * The server's refusal of this client's certificate that `err` is, or that closed
 * the connection under the request `err` failed: the reply (a ServerError) or the
 * alert. Null for any other error. Every try with the same certificate gets the same.
 */
export function certificateRefusalIn(err: unknown): Error | null {
  const refusal = err instanceof ConnectionClosedError && !err.requestSent ? err.cause : err;
  if (refusal instanceof ClientCertificateRefusedError) return refusal;
  if (refusal instanceof ServerError && isCertificateRefused(refusal.serverMessage)) return refusal;
  return null;
}

/**
 * Our verdict on the server's certificate: OpenSSL's verification failures
 * (`UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `CERT_HAS_EXPIRED`, ...) and Node's name
 * check. Not the server's alerts (`ERR_SSL_...`): those refuse our certificate.
 */
function isCertificateError(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' && !code.startsWith('ERR_SSL_') && /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(code);
}

/**
 * The client refused the server's certificate. Unlike a refused or timed-out
 * connection, waiting does not cure it, so the connection rounds stop on it.
 */
export class ServerCertificateRejectedError extends Error {}

function certificateError(address: string, err: Error): Error {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const advice =
    code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID'
      ? "check its dates against this machine's clock, and renew it if it has expired"
      : code === 'CERT_REVOKED'
        ? 'it was revoked: the server needs a new one'
        : code === 'ERR_TLS_CERT_ALTNAME_INVALID'
          ? 'connect by a name or address the certificate lists (or set tls.servername)'
          : 'give the CA that signed it as tls.ca (CLI: --tls-ca)';
  return new ServerCertificateRejectedError(`the TLS certificate of ${address} was not accepted (${err.message}): ${advice}`, { cause: err });
}

/** A reply's kind, for messages. */
export function describeReply(reply: Reply): string {
  if (reply.type === 'simple') return `simple string '${reply.value}'`;
  // An integer is the right kind for most commands: when it is refused, its value is why.
  if (reply.type === 'integer') return `integer ${reply.value}`;
  return `${reply.type} reply`;
}
