/**
 * The interfaces the sequencer core depends on. Stores and leadership live at
 * the edges (file, etcd, memory) and are injected, so the core can be tested
 * with fakes that delay, fail and crash.
 */

/**
 * High-water marks by sequence name. A mark is the first number not yet
 * reserved: every number below it may have been handed out, none at or above it.
 */
export type Marks = ReadonlyMap<string, bigint>;

export interface Store {
  /** What INFO and the logs call this store, e.g. `file:/var/lib/dolmeangi`. */
  readonly description: string;
  /**
   * Reads every persisted mark. Rejects with StateCorruptError (naming the file or key)
   * when state exists but cannot be trusted; never returns an empty map in its place.
   */
  load(): Promise<Map<string, bigint>>;
  /**
   * Makes these marks durable (the other sequences keep their stored marks).
   * Resolves only once they survive a crash of this process and of the machine.
   * Rejects with PersistenceError when storage fails (the caller retries) or
   * FencedError when this node may no longer write (group mode).
   * The caller never has two persist calls in flight at once, and never a mark
   * outside 0..2^63 (END, one past the largest number); a store refuses one with a RangeError.
   */
  persist(marks: Marks): Promise<void>;
  /** Releases locks and handles. Idempotent. */
  close(): Promise<void>;
}

/** Whether a node can hand out numbers now, and if not, why (for /readyz). */
export interface Readiness {
  readonly ready: boolean;
  readonly reason: string;
}

/**
 * Who may hand out numbers in a group: only the leader, and only while its
 * lease is surely alive. A single node has no Leadership and always may.
 */
export interface Leadership {
  readonly role: 'leader' | 'follower' | 'candidate';
  /**
   * Cheap enough to call per request: a monotonic-clock comparison, no I/O. The
   * answer may be reused for the rest of one synchronous stretch of work, whose
   * requests all arrived before it was given.
   */
  canServe(): boolean;
  /** The leader's advertised host:port, or null when none is known. */
  leaderAddress(): string | null;
  /** The same for clients of the TLS port; null also when the leader has no TLS port. */
  leaderTlsAddress(): string | null;
}
