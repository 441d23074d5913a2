/**
 * Reply decoder for the client side: a push state machine from bytes to
 * replies. Chunks may split anywhere; every length is bounded, so a broken or
 * hostile server costs the client bounded memory and linear work. No I/O.
 *
 * Text is decoded as latin1 (one char per byte), as the server encodes it.
 */
import { CarryBuffer } from './carry-buffer.js';

/** One decoded reply. Integers are exact bigints, parsed from their digits. */
export type Reply =
  | { readonly type: 'integer'; readonly value: bigint }
  | { readonly type: 'simple'; readonly value: string }
  /** `-CODE message`: `code` is the first word, `message` the rest (possibly empty). */
  | { readonly type: 'error'; readonly code: string; readonly message: string }
  /** `$-1` decodes to `value: null`. */
  | { readonly type: 'bulk'; readonly value: string | null }
  /** `*-1` decodes to `value: null`. */
  | { readonly type: 'array'; readonly value: readonly Reply[] | null };

export type ReplySink = (reply: Reply) => void;

export interface ReplyDecoderLimits {
  /** Longest `+` or `-` line, in bytes. */
  readonly maxLine: number;
  /** Longest bulk string, in bytes. INFO with very many sequences is the large case. */
  readonly maxBulk: number;
  readonly maxArray: number;
  readonly maxDepth: number;
}

const DEFAULT_REPLY_LIMITS: ReplyDecoderLimits = {
  maxLine: 1024 * 1024,
  maxBulk: 128 * 1024 * 1024,
  maxArray: 1024 * 1024,
  maxDepth: 8,
};

/**
 * `:`, `$` and `*` lines hold one number: 32 bytes is plenty, and garbage
 * without a line end is caught after 32 bytes instead of maxLine.
 */
const MAX_HEADER = 32;

const CR = 13;
const LF = 10;
const COLON = 58;
const PLUS = 43;
const MINUS = 45;
const DOLLAR = 36;
const STAR = 42;

const enum S {
  /** Expecting a type byte and its line; `scan` says where the LF search resumes. */
  Line,
  /** Inside a bulk body of `bulkLen` bytes plus CRLF. */
  BulkBody,
  /** A protocol violation was reported; everything after is ignored. */
  Failed,
}

interface OpenArray {
  readonly items: Reply[];
  readonly size: number;
}

const NEED_MORE = -1;
const FAILED = -2;

/**
 * Text the server wrote as UTF-8 (INFO, error messages: paths, and the words a
 * client sent, which it encodes as UTF-8), from the one-character-per-byte form
 * the decoder gives.
 */
export function bytesAsUtf8(text: string): string {
  // eslint-disable-next-line no-control-regex
  return /[^\x00-\x7f]/.test(text) ? Buffer.from(text, 'latin1').toString('utf8') : text;
}

export class ReplyDecoder {
  private readonly limits: ReplyDecoderLimits;
  private state = S.Line;
  private readonly carry = new CarryBuffer(65536);
  /** Offset from the start of the unconsumed bytes where the LF search resumes. */
  private scan = 0;
  private bulkLen = 0;
  private readonly arrays: OpenArray[] = [];
  private failure: string | null = null;

  constructor(limits: Partial<ReplyDecoderLimits> = {}) {
    this.limits = { ...DEFAULT_REPLY_LIMITS, ...limits };
  }

  /**
   * Feeds one chunk; every complete reply goes to `sink` in order. Returns a
   * description of the violation when the bytes are not a reply stream
   * (replies before it were still delivered); the decoder then ignores all
   * further input, since nothing after garbage can be trusted to line up.
   */
  feed(chunk: Buffer, sink: ReplySink): string | null {
    if (this.state === S.Failed) return null;
    const { buf, end } = this.carry.take(chunk);
    let pos = 0;
    for (;;) {
      const next = this.step(buf, pos, end, sink);
      if (next === NEED_MORE) break;
      if (next === FAILED) return this.failure;
      pos = next;
    }
    this.carry.keep(buf, pos, end);
    return null;
  }

  private fail(detail: string): typeof FAILED {
    this.state = S.Failed;
    this.failure = detail;
    this.carry.clear();
    this.arrays.length = 0;
    return FAILED;
  }

  /**
   * Consumes one line or bulk body at buf[pos..end): returns the new position,
   * NEED_MORE (nothing consumed) or FAILED.
   */
  private step(buf: Buffer, pos: number, end: number, sink: ReplySink): number {
    if (this.state === S.BulkBody) {
      const need = this.bulkLen + 2;
      if (end - pos < need) return NEED_MORE;
      if (buf[pos + this.bulkLen] !== CR || buf[pos + this.bulkLen + 1] !== LF) {
        return this.fail('bulk string not followed by CRLF');
      }
      this.state = S.Line;
      return this.emit({ type: 'bulk', value: buf.toString('latin1', pos, pos + this.bulkLen) }, sink, pos + need);
    }
    if (pos >= end) return NEED_MORE;

    const type = buf[pos]!;
    if (type !== COLON && type !== PLUS && type !== MINUS && type !== DOLLAR && type !== STAR) {
      return this.fail(`unexpected reply type byte ${printable(type)}`);
    }
    const limit = type === PLUS || type === MINUS ? this.limits.maxLine : MAX_HEADER;
    const from = pos + Math.max(this.scan, 1);
    const lf = from < end ? buf.indexOf(LF, from) : -1;
    if (lf === -1) {
      this.scan = end - pos;
      if (this.scan > limit + 2) return this.fail(`reply line longer than ${limit} bytes`);
      return NEED_MORE;
    }
    this.scan = 0;
    if (buf[lf - 1] !== CR) return this.fail('reply line not ended by CRLF');
    const textEnd = lf - 1;
    if (textEnd - (pos + 1) > limit) return this.fail(`reply line longer than ${limit} bytes`);
    const next = lf + 1;
    switch (type) {
      case COLON: {
        const text = buf.toString('latin1', pos + 1, textEnd);
        if (!/^-?[0-9]+$/.test(text)) return this.fail(`bad integer ':${text}'`);
        return this.emit({ type: 'integer', value: BigInt(text) }, sink, next);
      }
      case PLUS:
        return this.emit({ type: 'simple', value: buf.toString('latin1', pos + 1, textEnd) }, sink, next);
      case MINUS: {
        const text = buf.toString('latin1', pos + 1, textEnd);
        const space = text.indexOf(' ');
        const reply: Reply = space === -1
          ? { type: 'error', code: text, message: '' }
          : { type: 'error', code: text.slice(0, space), message: text.slice(space + 1) };
        return this.emit(reply, sink, next);
      }
      case DOLLAR: {
        const len = readLength(buf, pos + 1, textEnd);
        if (len === null || len < -1) return this.fail('bad bulk length');
        if (len === -1) return this.emit({ type: 'bulk', value: null }, sink, next);
        if (len > this.limits.maxBulk) return this.fail(`bulk string of ${len} bytes exceeds the limit of ${this.limits.maxBulk}`);
        this.bulkLen = len;
        this.state = S.BulkBody;
        return next;
      }
      default: { // '*', the only type left
        const len = readLength(buf, pos + 1, textEnd);
        if (len === null || len < -1) return this.fail('bad array length');
        if (len === -1) return this.emit({ type: 'array', value: null }, sink, next);
        if (len > this.limits.maxArray) return this.fail(`array of ${len} elements exceeds the limit of ${this.limits.maxArray}`);
        if (len === 0) return this.emit({ type: 'array', value: [] }, sink, next);
        if (this.arrays.length >= this.limits.maxDepth) return this.fail(`arrays nested deeper than ${this.limits.maxDepth}`);
        this.arrays.push({ items: [], size: len });
        return next;
      }
    }
  }

  /** Delivers a reply, into the innermost open array if there is one. */
  private emit(reply: Reply, sink: ReplySink, next: number): number {
    let r = reply;
    for (;;) {
      const open = this.arrays[this.arrays.length - 1];
      if (open === undefined) {
        sink(r);
        return next;
      }
      open.items.push(r);
      if (open.items.length < open.size) return next;
      this.arrays.pop();
      r = { type: 'array', value: open.items };
    }
  }

}

/** `-1` or 1-10 digits; null for anything else. Fits a number exactly. */
function readLength(buf: Buffer, start: number, end: number): number | null {
  let i = start;
  const negative = buf[i] === MINUS;
  if (negative) i++;
  const digits = end - i;
  if (digits < 1 || digits > 10) return null;
  let value = 0;
  for (; i < end; i++) {
    const c = buf[i]!;
    if (c < 48 || c > 57) return null;
    value = value * 10 + (c - 48);
  }
  return negative ? -value : value;
}

function printable(byte: number): string {
  return byte >= 33 && byte < 127 ? `'${String.fromCharCode(byte)}'` : `0x${byte.toString(16).padStart(2, '0')}`;
}
