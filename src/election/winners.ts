/**
 * The record of winners, `<prefix>winners/<lease ID>`: one key per campaign
 * won, naming the winner's lease, so that a new leader can fence out every
 * earlier leader that may still be serving (see fenceOut in etcd.ts), even one
 * whose leader key it never saw: a key deleted by hand takes with it the only
 * other record of its lease.
 *
 * Why one key per winner rather than one "last winner" key: a winner that waits
 * out a predecessor keeps its own lease alive meanwhile, so that whoever comes
 * after it waits in turn. A later campaign that won and then failed, or a retried
 * transaction, would overwrite a single key and lose that lease.
 *
 * Keys are added only by a winning campaign. One is removed only once its lease
 * can no longer stand for a leader still serving: a winner removes those it found
 * gone, or revoked while its own lease stays alive and on record; a member removes
 * its own when it revoked nobody on the strength of it (a campaign that failed
 * early) or after it served (a clean stop that was not waiting).
 *
 * The keys carry no lease. The name holds the lease ID; the value, JSON, also
 * names the member, for whoever reads them with `etcdctl get`.
 */

/** etcd lease IDs are int64; its API gives them as positive decimal text. */
const MAX_LEASE_ID = 2n ** 63n - 1n;

export function winnersPrefix(prefix: string): string {
  return `${prefix}winners/`;
}

export function winnerKey(prefix: string, leaseId: string): string {
  return `${winnersPrefix(prefix)}${leaseId}`;
}

export function winnerValue(nodeId: string, leaseId: string): string {
  return JSON.stringify({ nodeId, lease: leaseId });
}

/** The lease a key of the record names, or null for a key that is not one (nested, or not a lease ID). */
export function leaseOfWinner(prefix: string, key: Buffer): string | null {
  const id = key.toString('utf8').slice(winnersPrefix(prefix).length);
  return /^[1-9][0-9]{0,18}$/.test(id) && BigInt(id) <= MAX_LEASE_ID ? id : null;
}
