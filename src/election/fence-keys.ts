/**
 * The record of winners, `<prefix>terms/<lease ID>`: one key per campaign won,
 * naming the winner's lease, so that a new leader can fence out every earlier
 * leader that may still be serving (see fenceOut in etcd.ts), even one whose
 * leader key it never saw: a key deleted by hand takes with it the only other
 * record of its lease.
 *
 * Why one key per winner rather than one "last winner" key: a winner that waits
 * out a predecessor keeps its own lease alive meanwhile, so that whoever comes
 * after it waits in turn. A later campaign that won and then failed, or a retried
 * transaction, would overwrite a single key and lose that lease. Keys are only
 * ever added by a campaign, and deleted by a winner once it has found their lease
 * gone or revoked it, after its own key (with its lease kept) is in place.
 *
 * The keys carry no lease. The name holds the lease ID; the value, JSON, also
 * names the member, for whoever reads them with `etcdctl get`.
 */

export function termsPrefix(prefix: string): string {
  return `${prefix}terms/`;
}

export function termKey(prefix: string, leaseId: string): string {
  return `${termsPrefix(prefix)}${leaseId}`;
}

export function termValue(nodeId: string, leaseId: string): string {
  return JSON.stringify({ nodeId, lease: leaseId });
}

/** The lease a term key names, from its name; null for a key that is not one of ours. */
export function leaseOfTerm(key: Buffer): string | null {
  const name = key.toString('utf8');
  const id = name.slice(name.lastIndexOf('/') + 1);
  // etcd lease IDs as its API gives them: positive decimal int64.
  return /^[1-9][0-9]{0,18}$/.test(id) ? id : null;
}
