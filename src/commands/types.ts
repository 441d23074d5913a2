/**
 * What a command sees: its arguments, the connection's session, and the node's
 * services. Commands are pure functions of these; they never touch a socket.
 */
import type { SequenceSource } from '../core/sequencer.js';

export interface Session {
  authenticated: boolean;
  /** Set by QUIT: the connection closes once this reply is written. */
  quit: boolean;
  /**
   * The known command name this connection sent last, and its index in COMMANDS:
   * a lookup cache that only commands/index.ts reads and writes. The decoder hands
   * out one string per known name, so a run of one command costs a string compare
   * that V8 settles on the pointers, instead of a Map lookup (two for a name in
   * mixed case).
   */
  last: { readonly name: string; readonly index: number } | null;
  /**
   * The connection can no longer carry a reply (its socket is destroyed): a
   * request of it still waiting for storage takes no numbers (see Caller in the
   * sequence core). Read from the socket, so no event has to arrive first.
   */
  readonly gone: boolean;
  /** The connection came in on the TLS port: NOTLEADER names the leader's TLS address. */
  readonly tls: boolean;
  /** Set by CLIENT SETNAME, for CLIENT GETNAME. */
  name: string | null;
  /**
   * After MULTI: 'empty' until a command arrives, which is refused unrun and
   * makes it 'aborted' (see transaction.ts); null outside MULTI.
   */
  transaction: 'empty' | 'aborted' | null;
}

export interface Services {
  /** Whatever hands out numbers on this node (a Sequencer, or a group member). */
  readonly source: SequenceSource;
  readonly maxBatch: bigint;
  /** SHA-256 of the password, or null when none is required. */
  readonly passwordDigest: Buffer | null;
  /** The INFO text, built on demand. */
  info(): string;
  /** Called on each failed AUTH, for logs and metrics. */
  authFailed(): void;
}

/**
 * An encoded reply; one that waits for storage; or one to be made once every
 * reply before it on the connection is ready, so that facts it reports (INFO)
 * are not older than the replies the client reads before it.
 */
export type Reply = string | Promise<string> | (() => string);

export interface Command {
  /** Canonical upper-case name. */
  readonly name: string;
  /** Arguments after the name. */
  readonly minArgs: number;
  readonly maxArgs: number;
  /**
   * Arguments it reads, when fewer than maxArgs: the decoder keeps only so many
   * words (KEPT_WORDS) and hands on later ones as '', which count for the arity.
   */
  readonly readsArgs?: number;
  /** Answered before AUTH when a password is required. */
  readonly beforeAuth?: boolean;
  /** Run during a clean stop, when every other command is refused (see refusedWhileStopping). */
  readonly whileStopping?: boolean;
  /** Run inside MULTI, where every other command is refused (see transaction.ts). */
  readonly inTransaction?: boolean;
  /** Left out of the unknown-command error's list: there for Redis clients and tools, not part of the service. */
  readonly unlisted?: boolean;
  /** `words[0]` is the command name as sent; arguments start at `words[1]`. */
  run(words: string[], session: Session, services: Services): Reply;
}
