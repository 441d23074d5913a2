/**
 * The numeric and naming rules of sequences, and the core's refusal texts. Pure;
 * used by the command layer, the sequencer core, the config parser, the stores
 * and the client.
 */

/** The largest number ever handed out: 2^63-1, so every value fits a signed 64-bit integer. */
export const MAX_VALUE = (1n << 63n) - 1n;
/** `next` of an exhausted sequence; also the highest mark a store ever holds. */
export const END = 1n << 63n;

/**
 * For stores, before writing: a mark outside 0..END, stored, would make the state
 * unloadable (the file and etcd stores refuse such a mark on load). The core never
 * asks for one; if it did, the RangeError would count as a failed write, retried
 * and reported as `persistence unavailable: mark ... outside 0..2^63`: a bug in the
 * core, not a storage problem, and nothing unloadable is written meanwhile.
 */
export function checkMarks(marks: Iterable<readonly [string, bigint]>): void {
  for (const [name, mark] of marks) {
    if (mark < 0n || mark > END) throw new RangeError(`mark ${mark} of ${name} is outside 0..2^63`);
  }
}

export const DEFAULT_SEQUENCE = 'default';
/** The longest word of a request, in bytes: a password longer than this cannot be sent. */
export const MAX_WORD_BYTES = 64 * 1024;
export const NAME_MAX_LENGTH = 64;
export const NAME_RULE = '1-64 characters of A-Z a-z 0-9 _ . : -';

/**
 * The core's refusals of a request it did nothing with, in the server's words. Kept
 * here, below the protocol, which shares them with the client (protocol/refusals.ts).
 */
export const SHUTTING_DOWN_MESSAGE = 'server is shutting down; retry on another server';
export const STARTING_MESSAGE = 'server is starting; retry shortly';

const NAME_CHAR = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-') NAME_CHAR[c.charCodeAt(0)] = 1;

/** Why `name` is refused, in the words the server uses; for clients that check before sending. */
export function invalidNameMessage(name: string): string {
  return `invalid sequence name '${name.length > NAME_MAX_LENGTH ? `${name.slice(0, NAME_MAX_LENGTH)}...` : name}': use ${NAME_RULE}`;
}

/**
 * For callers of the client library, whose names come from JavaScript too: a
 * name that is not a string is a TypeError, a string the server would refuse a
 * RangeError. Both before anything is sent.
 */
export function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string') throw new TypeError(`a sequence name must be a string, got ${typeof name}; use ${NAME_RULE}`);
  if (!isValidName(name)) throw new RangeError(invalidNameMessage(name));
}

export function isValidName(name: string): boolean {
  const n = name.length;
  if (n === 0 || n > NAME_MAX_LENGTH) return false;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c >= 128 || NAME_CHAR[c] === 0) return false;
  }
  return true;
}

/**
 * Parses an unsigned decimal integer exactly. Returns undefined for anything but
 * 1-20 ASCII digits. Up to 15 digits are summed in a double, where every integer
 * below 2^53 is exact, which is much cheaper than BigInt's string parsing.
 */
export function parseUnsigned(text: string): bigint | undefined {
  const n = text.length;
  if (n === 0 || n > 20) return undefined;
  let value = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
    value = value * 10 + (c - 48);
  }
  return n <= 15 ? BigInt(value) : BigInt(text);
}

/** The longest delay Node's timers hold (2^31 - 1 ms, about 24.8 days); a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
