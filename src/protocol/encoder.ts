/**
 * Reply encoder. Replies are built as latin1 strings and concatenated per
 * batch, so a chunk of pipelined requests costs one socket write.
 */

export const OK = '+OK\r\n';
export const PONG = '+PONG\r\n';

export function integer(n: bigint): string {
  return `:${n}\r\n`;
}

/** `-CODE message`; with an empty message only the code is sent (`-NOTLEADER`). */
export function error(code: string, message: string): string {
  return message === '' ? `-${code}\r\n` : `-${code} ${oneLine(message)}\r\n`;
}

/**
 * The server's own text (paths, the operating system's error messages) as a
 * reply string: its UTF-8 bytes, one character per byte, as every reply is built.
 * Text from the wire is already bytes and must not pass through here.
 */
export function utf8Bytes(text: string): string {
  // eslint-disable-next-line no-control-regex
  return /[^\x00-\x7f]/.test(text) ? Buffer.from(text, 'utf8').toString('latin1') : text;
}

/** A bulk string of latin1 text: one character is one byte, so its length is the byte count. */
export function bulk(text: string): string {
  return `$${text.length}\r\n${text}\r\n`;
}

/**
 * Makes client-supplied text safe inside a one-line reply: CR and LF would let
 * a request forge extra replies, so every control byte becomes a space.
 */
export function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  return /[\x00-\x1f\x7f]/.test(text) ? text.replace(/[\x00-\x1f\x7f]/g, ' ') : text;
}

/**
 * Client-supplied text (latin1: one char per byte) cut to at most `max` bytes
 * for an error message, marked `...` when cut. The cut backs off to the start
 * of a UTF-8 character, so a name in UTF-8 is never echoed with half a
 * character (an invalid sequence) before the mark.
 */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  let cut = max;
  // 0x80-0xBF continue a UTF-8 character (of at most four bytes): the one at the cut began before it.
  for (let back = 0; back < 3 && cut > 0 && (text.charCodeAt(cut) & 0xc0) === 0x80; back++) cut--;
  return `${text.slice(0, cut)}...`;
}
