/**
 * Request encoder for the client side: a command is sent as a RESP array of
 * bulk strings, never inline, so any word (a password with spaces, say)
 * reaches the server intact. Words are encoded as UTF-8; command names and
 * sequence names are ASCII, where UTF-8 and the server's latin1 agree.
 */

/** The wire form of one command, ready to be concatenated with others into one write. */
export function encodeCommand(words: readonly string[]): string {
  let out = `*${words.length}\r\n`;
  for (const word of words) out += `$${Buffer.byteLength(word, 'utf8')}\r\n${word}\r\n`;
  return out;
}
