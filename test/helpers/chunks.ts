/**
 * Ways to cut a byte stream into chunks, for decoder tests: a decoder must give
 * the same result however the network splits what it reads.
 */

/** Byte by byte: every state of the decoder meets the end of a chunk. */
export function bytewise(bytes: Buffer): Buffer[] {
  return [...bytes].map((b) => Buffer.from([b]));
}

/** Whole, byte by byte, and in two at every offset. */
export function splits(bytes: Buffer): Array<{ how: string; chunks: Buffer[] }> {
  const ways = [
    { how: 'whole', chunks: [bytes] },
    { how: 'byte by byte', chunks: bytewise(bytes) },
  ];
  for (let i = 1; i < bytes.length; i++) {
    ways.push({ how: `split at ${i}`, chunks: [bytes.subarray(0, i), bytes.subarray(i)] });
  }
  return ways;
}

/** Cut at the given offsets (taken modulo the length, so any natural numbers do, as fast-check gives them). */
export function cut(bytes: Buffer, offsets: number[]): Buffer[] {
  const points = [...new Set(offsets.map((o) => o % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    chunks.push(bytes.subarray(from, p));
    from = p;
  }
  chunks.push(bytes.subarray(from));
  return chunks;
}
