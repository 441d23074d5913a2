/**
 * Request decoder: a push state machine from bytes to frames (arrays of words).
 * Two framings share one connection: inline lines (telnet, nc) and RESP arrays
 * of bulk strings (redis-cli and every Redis client). No I/O; chunks may split
 * anywhere, and each byte is examined a bounded number of times, so a slow or
 * hostile sender costs linear work and bounded memory.
 */
import { MAX_WORD_BYTES } from '../core/limits.js';
import { CarryBuffer } from './carry-buffer.js';

export const MAX_LINE = 64 * 1024;
export const MAX_BULK = MAX_WORD_BYTES;
export const MAX_ARRAY = 1024;
/**
 * Words a frame keeps: the command name and two arguments, as many as any
 * command reads (a test holds the command table to it). Later words are handed
 * on as '': they only make the request's arity wrong, and how many there are
 * is all that counts. So an unfinished frame holds at most this many words of
 * MAX_BULK bytes, not MAX_ARRAY x MAX_BULK (64 MiB), and a legal request of
 * many large elements gets its error reply rather than a protocol error.
 */
export const KEPT_WORDS = 3;
/** `*1024\r\n` and `$65536\r\n` fit; a longer header line is an error at once. */
const MAX_HEADER = 32;

const CR = 13;
const LF = 10;
const SPACE = 32;
const TAB = 9;

export class ProtocolError extends Error {
  constructor(detail: string) {
    super(`Protocol error: ${detail}`);
  }
}

/**
 * Called once per complete frame. Words are decoded as latin1: one char per
 * byte; from KEPT_WORDS on they are '' (the array keeps its full length).
 */
export type FrameSink = (words: string[]) => void;

// States as plain numbers: a `const enum` is not inlined under isolatedModules,
// and the state is read on every step of the hot loop.
const S = {
  /** Between frames. */
  Start: 0,
  /** Inside an inline line; `scan` is where the search for LF resumes. */
  Inline: 1,
  /** Inside `*<n>\r\n`. */
  ArrayHeader: 2,
  /** Expecting `$<len>\r\n` of the next element. */
  BulkHeader: 3,
  /** Inside a bulk body of `bulkLen` bytes plus CRLF. */
  BulkBody: 4,
  /** A protocol error was reported; everything after is ignored. */
  Failed: 5,
} as const;
type State = (typeof S)[keyof typeof S];

export class Decoder {
  private state: State = S.Start;
  private readonly carry = new CarryBuffer(4096);
  /** Offset (from the start of the unconsumed bytes) where the LF search resumes. */
  private scan = 0;
  private expected = 0;
  private bulkLen = 0;
  private words: string[] = [];
  /** The error that stopped decoding, once there is one. */
  private fail: ProtocolError | null = null;
  /**
   * The argument last seen at each position of a frame: a client that repeats
   * `GETSEQ orders` gets the same string back, compared byte for byte, instead
   * of a new one from a call into C++ per request.
   */
  private readonly recent: string[] = [];
  /** The command name of the last frame (it may be any word, when it was unknown). */
  private lastName = '';
  /** hold() was called: frames wait in the carried bytes until release(). */
  private held = false;

  /**
   * Feeds one chunk. Every complete frame goes to `sink` in order. Returns a
   * ProtocolError when the input breaks the protocol (frames before it were
   * still delivered); after that the decoder ignores all input.
   */
  feed(chunk: Buffer, sink: FrameSink): ProtocolError | null {
    if (this.state === S.Failed) return null;
    const { buf, end } = this.carry.take(chunk);
    let pos = 0;
    let err: ProtocolError | null = null;
    while (!this.held) {
      const r = this.step(buf, pos, end, sink);
      if (r === -1) break;
      if (r === -2) {
        err = this.fail;
        break;
      }
      pos = r;
    }
    if (err !== null) this.carry.clear();
    else this.carry.keep(buf, pos, end);
    return err;
  }

  private error(detail: string): -2 {
    this.state = S.Failed;
    this.fail = new ProtocolError(detail);
    return -2;
  }

  /**
   * Consumes one token from buf[pos..end): returns the new position, -1 when
   * more bytes are needed (nothing consumed past `pos`), -2 on a protocol error.
   */
  private step(buf: Buffer, pos: number, end: number, sink: FrameSink): number {
    switch (this.state) {
      case S.Start: {
        if (pos >= end) return -1;
        const fast = wholeFrame(buf, pos, end);
        if (fast !== null) {
          sink(fast.words);
          return pos + fast.text.length;
        }
        if (buf[pos] === 42 /* '*' */) {
          const next = this.wholeArray(buf, pos, end, sink);
          if (next !== -1) return next;
          this.state = S.ArrayHeader;
          this.scan = 1;
        } else {
          this.state = S.Inline;
          this.scan = 0;
        }
        return pos;
      }
      case S.Inline: {
        const from = pos + this.scan;
        const lf = from < end ? buf.indexOf(LF, from) : -1;
        if (lf === -1) {
          this.scan = end - pos;
          if (this.scan > MAX_LINE + 1) return this.error('too big inline request');
          return -1;
        }
        let lineEnd = lf;
        if (lineEnd > pos && buf[lineEnd - 1] === CR) lineEnd--;
        if (lineEnd - pos > MAX_LINE) return this.error('too big inline request');
        this.state = S.Start;
        const words = splitInline(buf, pos, lineEnd);
        if (words.length > 0) sink(words);
        return lf + 1;
      }
      case S.ArrayHeader: {
        const n = readHeader(buf, pos, end);
        if (n === NEED_MORE) return -1;
        if (n === BAD_HEADER || n.value < -1) return this.error('invalid multibulk length');
        if (n.value > MAX_ARRAY) return this.error(`too many arguments (at most ${MAX_ARRAY})`);
        if (n.value <= 0) {
          this.state = S.Start;
        } else {
          // `words` is empty here: each frame hands its array on and starts a new one.
          this.expected = n.value;
          this.state = S.BulkHeader;
        }
        return n.next;
      }
      case S.BulkHeader: {
        if (pos >= end) return -1;
        if (buf[pos] !== 36 /* '$' */) {
          return this.error(`expected '$', got '${printable(buf[pos]!)}'`);
        }
        const n = readHeader(buf, pos, end);
        if (n === NEED_MORE) return -1;
        if (n === BAD_HEADER || n.value < 0) return this.error('invalid bulk length');
        if (n.value > MAX_BULK) return this.error(`bulk string longer than ${MAX_BULK} bytes`);
        this.bulkLen = n.value;
        this.state = S.BulkBody;
        return n.next;
      }
      case S.BulkBody: {
        const need = this.bulkLen + 2;
        if (end - pos < need) return -1;
        if (buf[pos + this.bulkLen] !== CR || buf[pos + this.bulkLen + 1] !== LF) {
          return this.error('bulk string not followed by CRLF');
        }
        const i = this.words.length;
        this.words.push(i < KEPT_WORDS ? this.word(i, buf, pos, pos + this.bulkLen) : '');
        if (this.words.length === this.expected) {
          const words = this.words;
          this.words = [];
          this.state = S.Start;
          sink(words);
        } else {
          this.state = S.BulkHeader;
        }
        return pos + need;
      }
      case S.Failed:
        return -1;
    }
  }

  /**
   * A RESP array read in one pass while its elements are all in the buffer: the
   * usual case, and one without a state change per element. Returns the position
   * after it; at an element that is cut short or breaks a rule, hands the words so
   * far to the state machine (which reports errors) and returns where it stopped.
   * -1: the array header itself is for the state machine to read.
   */
  private wholeArray(buf: Buffer, pos: number, end: number, sink: FrameSink): number {
    const h = readHeader(buf, pos, end);
    if (h === NEED_MORE || h === BAD_HEADER || h.value < 1 || h.value > MAX_ARRAY) return -1;
    const count = h.value;
    let p = h.next;
    const words: string[] = [];
    for (let i = 0; i < count; i++) {
      const start = wholeBulk(buf, p, end);
      if (start === -1) {
        this.words = words;
        this.expected = count;
        this.state = S.BulkHeader;
        return p;
      }
      const stop = start + header.value;
      words.push(i < KEPT_WORDS ? this.word(i, buf, start, stop) : '');
      p = stop + 2;
    }
    sink(words);
    return p;
  }

  /** Word `i` of a frame: a known command name, a recent argument, or new text. */
  private word(i: number, buf: Buffer, start: number, end: number): string {
    if (i === 0) {
      // Most connections send one command over and over: try the last one first.
      const last = this.lastName;
      if (last.length === end - start && sameText(buf, start, last)) return last;
      const name = commandName(buf, start, end);
      if (name.length <= RECENT_MAX_LENGTH) this.lastName = name;
      return name;
    }
    // i < KEPT_WORDS: every argument position a command has is remembered.
    if (end - start > RECENT_MAX_LENGTH) return buf.toString('latin1', start, end);
    const seen = this.recent[i - 1];
    if (seen !== undefined && seen.length === end - start && sameText(buf, start, seen)) return seen;
    const text = buf.toString('latin1', start, end);
    this.recent[i - 1] = text;
    return text;
  }

  /**
   * Delivers no more frames, from the chunk being fed (after the frame the sink
   * is handling) or from later ones, until release(): the bytes wait, carried.
   * How a reader stops taking requests from a client that has not read its
   * replies, without dropping what it already read.
   */
  hold(): void {
    this.held = true;
  }

  /** Ends hold(); frames carried meanwhile come out at the next feed (an empty chunk will do). */
  release(): void {
    this.held = false;
  }

  /** Bytes carried: an incomplete frame (bounded by the protocol limits), or all that came during hold(). */
  get buffered(): number {
    return this.carry.length;
  }
}

/** Up to what length an argument is remembered at its position. */
const RECENT_MAX_LENGTH = 64;

/**
 * Whether buf[start..] holds `text`'s characters as bytes (the caller checks
 * there is room). A loop the JIT compiles inline: for a few bytes, Buffer#compare's
 * call into C++ (argument checks and all) costs several times more.
 */
function sameText(buf: Buffer, start: number, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (buf[start + i] !== text.charCodeAt(i)) return false;
  return true;
}

const NEED_MORE = 0;
const BAD_HEADER = 1;
type Header = { value: number; next: number };
const header: Header = { value: 0, next: 0 };

/**
 * Reads `<prefix><digits>\r\n` at buf[pos]. The returned object is reused:
 * read it before the next call.
 */
function readHeader(buf: Buffer, pos: number, end: number): Header | typeof NEED_MORE | typeof BAD_HEADER {
  let i = pos + 1;
  let neg = false;
  if (i < end && buf[i] === 45 /* '-' */) {
    neg = true;
    i++;
  }
  let value = 0;
  let digits = 0;
  for (;;) {
    if (i >= end) return end - pos > MAX_HEADER ? BAD_HEADER : NEED_MORE;
    const c = buf[i]!;
    if (c >= 48 && c <= 57) {
      // As Redis reads them: no leading zero, so `*01` is as malformed there as here.
      if (digits === 1 && value === 0) return BAD_HEADER;
      if (++digits > 9) return BAD_HEADER;
      value = value * 10 + (c - 48);
      i++;
      continue;
    }
    if (c !== CR || digits === 0 || (neg && value === 0)) return BAD_HEADER;
    if (i + 1 >= end) return NEED_MORE;
    if (buf[i + 1] !== LF) return BAD_HEADER;
    header.value = neg ? -value : value;
    header.next = i + 2;
    return header;
  }
}

/**
 * Where the body of the bulk string at buf[p] starts, when the whole string and
 * its CRLF are in the buffer and break no rule (its length is then in
 * `header.value`); -1 otherwise.
 */
function wholeBulk(buf: Buffer, p: number, end: number): number {
  if (p >= end || buf[p] !== 36 /* '$' */) return -1;
  const b = readHeader(buf, p, end);
  if (b === NEED_MORE || b === BAD_HEADER || b.value < 0 || b.value > MAX_BULK) return -1;
  const stop = b.next + b.value;
  return stop + 2 <= end && buf[stop] === CR && buf[stop + 1] === LF ? b.next : -1;
}

/**
 * The words of an inline line. A line is not an array, so the 1,024-element
 * limit (docs/protocol.md) does not make it an error; words past MAX_ARRAY + 1 are not counted,
 * which keeps a line of 32,768 one-letter words to a small array and leaves the
 * request's arity wrong for every command, as it is.
 */
function splitInline(buf: Buffer, start: number, end: number): string[] {
  const words: string[] = [];
  let i = start;
  while (i < end && words.length <= MAX_ARRAY) {
    while (i < end && (buf[i] === SPACE || buf[i] === TAB)) i++;
    if (i >= end) break;
    const w = i;
    while (i < end && buf[i] !== SPACE && buf[i] !== TAB) i++;
    const n = words.length;
    words.push(n === 0 ? commandName(buf, w, i) : n < KEPT_WORDS ? buf.toString('latin1', w, i) : '');
  }
  return words;
}

/**
 * The protocol's command names (a test keeps them equal to the command table's,
 * which this layer does not import).
 */
export const COMMAND_NAMES: readonly string[] = [
  ...['GETSEQ', 'CURRENT', 'GETSEQ_BATCH', 'PING', 'INFO', 'AUTH', 'QUIT'],
  // Those kept for Redis clients and tools, last: rarely sent, so tried last.
  ...['ECHO', 'SELECT', 'CLIENT', 'MULTI', 'EXEC', 'DISCARD'],
];

/**
 * Command names as sent by clients, upper and lower case: a word that matches
 * one byte for byte becomes this very string, whose hash V8 already knows, so
 * the command lookup costs no hashing of a fresh string per request.
 */
const KNOWN_NAMES: readonly string[] = COMMAND_NAMES.flatMap((n) => [n, n.toLowerCase()]);

/**
 * The frames load generators and clients send most, byte for byte. One that
 * sits whole in the buffer skips the state machine and its allocations; the
 * words array is shared, so commands must never change the words they get.
 */
const FAST_FRAMES: ReadonlyArray<{ readonly text: string; readonly words: string[] }> = [
  ['GETSEQ', 'resp'],
  ['GETSEQ', 'inline'],
  ['CURRENT', 'resp'],
  ['PING', 'resp'],
].map(([name, form]) => ({
  // latin1: one character per byte, so `text.length` is the frame's length in bytes. Made
  // through a Buffer so it is one flat string: a concatenation read char by char is slower.
  text: Buffer.from(form === 'resp' ? `*1\r\n$${name!.length}\r\n${name}\r\n` : `${name}\r\n`, 'latin1').toString('latin1'),
  words: Object.freeze([name!]) as string[],
}));

function wholeFrame(buf: Buffer, pos: number, end: number): { readonly text: string; readonly words: string[] } | null {
  for (const f of FAST_FRAMES) {
    if (end - pos >= f.text.length && sameText(buf, pos, f.text)) return f;
  }
  return null;
}

function commandName(buf: Buffer, start: number, end: number): string {
  const len = end - start;
  for (const name of KNOWN_NAMES) {
    if (name.length === len && sameText(buf, start, name)) return name;
  }
  return buf.toString('latin1', start, end);
}

function printable(byte: number): string {
  return byte >= 33 && byte < 127 ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
}
