/**
 * Errors the client library throws. Match on the class or on `code`; every
 * message says what happened and what to do about it.
 */
import { DolmeangiError } from '../errors.js';
import { CERTIFICATE_REFUSED, SERVER_FULL } from '../protocol/unasked-refusals.js';
import { bytesAsUtf8 } from '../protocol/reply-decoder.js';

/**
 * The server is a follower in a group. The client follows these redirects by
 * itself; this reaches the caller only when it ran out of hops or time.
 */
export class NotLeaderError extends DolmeangiError {
  /** The leader's `host:port` as the server reported it, or null when it knows none. */
  readonly leader: string | null;
  constructor(leader: string | null, message?: string) {
    super(
      'NOTLEADER',
      message ??
        (leader === null
          ? 'the server is not the leader and knows of none: a leader is probably being elected; retry shortly'
          : `the server is not the leader; the leader is ${leader}: connect there, or list every member in servers`),
    );
    this.leader = leader;
  }
}

/** The server answered with an error reply (`-ERR ...`, `-NOAUTH ...`, `-WRONGPASS ...`). */
export class ServerError extends DolmeangiError {
  /** The first word of the reply: ERR, NOAUTH, WRONGPASS, ... */
  readonly wireCode: string;
  /** The rest of the reply, as the server wrote it. */
  readonly serverMessage: string;
  constructor(wireCode: string, serverMessage: string) {
    const text = serverMessage === '' ? wireCode : `${wireCode} ${serverMessage}`;
    const hint = hintFor(wireCode, serverMessage);
    super('SERVER', hint === null ? `server replied: ${text}` : `server replied: ${text}: ${hint}`);
    this.wireCode = wireCode;
    this.serverMessage = serverMessage;
  }
}

/**
 * No reply within the request timeout. For GETSEQ and GETSEQ_BATCH the
 * server may still have issued the numbers: they are skipped, never handed
 * out again, and the client does not retry (see SequencerClient).
 */
export class TimeoutError extends DolmeangiError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TIMEOUT', message, options);
  }
}

/**
 * The request could not be sent: no server could be reached before the request
 * timed out, or, sooner, every server refused this client's certificate (or
 * presented one it does not accept). It is a TimeoutError too; nothing was
 * issued. `cause` holds the last connection failure.
 */
export class NoServerAvailableError extends TimeoutError {
  override readonly code = 'NO_SERVER';
}

/** The connection ended before the reply arrived. */
export class ConnectionClosedError extends DolmeangiError {
  /**
   * False when the request never left this process, or the server refused the
   * connection before reading it (full, or refusing this client's certificate):
   * nothing was done, and retrying it is safe (though for a certificate, futile).
   * True when it may have reached the server, which may have acted on it.
   */
  readonly requestSent: boolean;
  constructor(message: string, options: { requestSent: boolean; cause?: unknown }) {
    super('CONNECTION_CLOSED', message, { cause: options.cause });
    this.requestSent = options.requestSent;
  }
}

/**
 * The server sent bytes that are not a valid reply, or a reply nobody asked
 * for. The connection is dropped since later replies cannot be matched to
 * requests any more. Named apart from the server's request-side ProtocolError.
 */
export class ReplyProtocolError extends DolmeangiError {
  constructor(address: string, detail: string) {
    super(
      'PROTOCOL',
      `${address} sent an invalid reply (${detail}); the connection was dropped. ` +
        'Check that the address is a dolmeangi server and not another service.',
    );
  }
}

/** The error a `-CODE message` reply stands for. */
export function fromWire(code: string, message: string): NotLeaderError | ServerError {
  if (code === 'NOTLEADER') return new NotLeaderError(message === '' ? null : message);
  return new ServerError(code, bytesAsUtf8(message));
}

/** The error a server at --max-connections sends, unasked, before it closes. */
export function isServerFull(message: string): boolean {
  return message.startsWith(SERVER_FULL);
}

/** The error a TLS port with --tls-ca sends, unasked, to a client whose certificate it refuses, before it closes. */
export function isCertificateRefused(message: string): boolean {
  return message.startsWith(CERTIFICATE_REFUSED);
}

/**
 * An error a server sends unasked as it accepts, before it closes without
 * reading: no request on that connection was acted on.
 */
export function isConnectionRefusal(message: string): boolean {
  return isServerFull(message) || isCertificateRefused(message);
}

function hintFor(code: string, message: string): string | null {
  switch (code) {
    case 'NOAUTH':
      return 'the server requires a password: set the client option password (CLI: --password or SEQUENCER_PASSWORD)';
    case 'WRONGPASS':
      return 'the password was refused: make it match the server\'s --requirepass';
  }
  if (message.startsWith('persistence unavailable')) {
    return 'the server cannot make numbers durable right now and resumes by itself when storage recovers; retry later';
  }
  if (message.startsWith('sequence exhausted')) {
    return 'the sequence has no room below 2^63-1 for what was asked (a batch must fit whole, so a smaller one may still fit); use another sequence name';
  }
  if (isServerFull(message)) {
    return 'the server is at --max-connections: close idle clients or raise the limit';
  }
  if (isCertificateRefused(message)) {
    return 'set such a certificate and its key as tls.cert and tls.key (CLI: --tls-cert, --tls-key)';
  }
  if (message.startsWith('Protocol error')) return 'the server could not parse the request: please report this client bug';
  return null;
}
