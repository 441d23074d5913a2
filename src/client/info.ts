/** The INFO reply: `key:value` lines, one `sequence:` line per sequence. */
import { parseUnsigned } from '../core/limits.js';

export interface SequenceInfo {
  readonly name: string;
  /** What the next GETSEQ on this sequence returns. */
  readonly current: bigint;
  /** The first number not yet durable, or null when the server reports none (e.g. --in-memory). */
  readonly durableMark: bigint | null;
}

export interface ServerInfo {
  /**
   * Every `key:value` line except `sequence:` lines, e.g. `fields.role`.
   * Should a key repeat, its last value is kept; `raw` has them all.
   */
  readonly fields: Readonly<Record<string, string>>;
  /** One entry per `sequence:name=...,current=...,durable_mark=...` line, in server order. */
  readonly sequences: readonly SequenceInfo[];
  /** The reply exactly as received. */
  readonly raw: string;
}

/**
 * Lenient on purpose: lines it does not understand are skipped rather than
 * failing the call, so a newer server that reports more still works.
 */
export function parseInfo(raw: string): ServerInfo {
  const fields: Record<string, string> = Object.create(null);
  const sequences: SequenceInfo[] = [];
  for (const line of raw.split(/\r?\n/)) {
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const key = line.slice(0, colon);
    const value = line.slice(colon + 1);
    if (key === 'sequence') {
      const sequence = parseSequence(value);
      if (sequence !== null) sequences.push(sequence);
    } else {
      fields[key] = value;
    }
  }
  return { fields, sequences, raw };
}

function parseSequence(value: string): SequenceInfo | null {
  const attrs = new Map<string, string>();
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) attrs.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const name = attrs.get('name');
  const current = parseUnsigned(attrs.get('current') ?? '');
  if (name === undefined || current === undefined) return null;
  const mark = attrs.get('durable_mark');
  return { name, current, durableMark: mark === undefined ? null : parseUnsigned(mark) ?? null };
}
