/**
 * The `<prefix>writer` key: which term wrote the marks last. The etcd store
 * guards its writes with the key's revision (store/etcd.ts); a new leader reads
 * the lease in its value, to find a predecessor that may still be serving even
 * when it never saw that predecessor's leader key (election/etcd.ts, fenceOut).
 *
 * Every leader writes marks before it hands out a number, and a write is refused
 * once its term's leader key is gone, so the last writer is the only earlier
 * leader that can still be serving when a campaign finds no leader key.
 */
import type { LeadershipTerm } from '../election/etcd.js';

export function writerKey(prefix: string): string {
  return `${prefix}writer`;
}

/** What a term writes into the key: JSON, so that `etcdctl get` shows what it means. */
export function writerValue(term: LeadershipTerm): string {
  return JSON.stringify({ term: term.revision, lease: term.leaseId });
}

/**
 * The lease of the term that wrote `value`, or null when the value names none:
 * written by a version that stored only the term's revision, or by hand.
 */
export function writerLease(value: Buffer | undefined): string | null {
  if (value === undefined) return null;
  try {
    const v = JSON.parse(value.toString('utf8')) as { lease?: unknown };
    return typeof v.lease === 'string' && /^[1-9][0-9]*$/.test(v.lease) ? v.lease : null;
  } catch {
    return null;
  }
}
