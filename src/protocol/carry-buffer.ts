/**
 * The bytes of an incomplete frame, carried from one chunk to the next. Both
 * decoders parse straight from a chunk when nothing is carried (the common
 * case) and copy only an unfinished tail here, in a buffer that grows
 * geometrically, so a sender that splits frames finely still costs linear work.
 */
export class CarryBuffer {
  /** The carried bytes are bytes[0..length). */
  private bytes: Buffer = Buffer.alloc(0);
  length = 0;
  /** take() handed out the carried bytes (not the chunk itself). */
  private carrying = false;

  /** @param shrinkAbove a buffer larger than this is released once empty */
  constructor(private readonly shrinkAbove: number) {}

  /**
   * The bytes to parse for this chunk: the chunk itself when nothing is carried,
   * else the carried bytes followed by the chunk. Either way `end` is the buffer's
   * length, so a search to its end never reads stale bytes past what was received.
   */
  take(chunk: Buffer): { buf: Buffer; end: number } {
    this.carrying = this.length > 0;
    if (!this.carrying) return { buf: chunk, end: chunk.length };
    this.ensure(this.length + chunk.length);
    chunk.copy(this.bytes, this.length);
    this.length += chunk.length;
    return { buf: this.bytes.subarray(0, this.length), end: this.length };
  }

  /** Keeps buf[pos..end) for the next chunk; `buf` is what take() returned. */
  keep(buf: Buffer, pos: number, end: number): void {
    const rest = end - pos;
    if (rest === 0) return this.clear();
    if (this.carrying) {
      // `buf` is a view of the start of `bytes`.
      if (pos > 0) this.bytes.copyWithin(0, pos, end);
    } else {
      this.ensure(rest);
      buf.copy(this.bytes, 0, pos, end);
    }
    this.length = rest;
  }

  clear(): void {
    this.length = 0;
    if (this.bytes.length > this.shrinkAbove) this.bytes = Buffer.alloc(0);
  }

  private ensure(size: number): void {
    if (this.bytes.length >= size) return;
    const grown = Buffer.allocUnsafe(Math.max(size, this.bytes.length * 2, 256));
    this.bytes.copy(grown, 0, 0, this.length);
    this.bytes = grown;
  }
}
