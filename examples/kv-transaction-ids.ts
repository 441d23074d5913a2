/**
 * Transaction ids for a key-value store, the use the sequencer was built for:
 * every node of the store asks one sequencer, so ids are unique across the
 * cluster and a later transaction always gets a larger id.
 *
 * Run a server (`npm start`, or `dolmeangi sequencer --in-memory`), then:
 *   npx tsx examples/kv-transaction-ids.ts
 * SEQUENCER_SERVER (host:port[,host:port...]) and SEQUENCER_PASSWORD are honoured.
 */
// Imported by package name, as a service that depends on dolmeangi would.
import { DolmeangiError, SequencerClient } from 'dolmeangi';

/** A toy store: each committed write remembers the id of the transaction that made it. */
class TinyKv {
  private readonly data = new Map<string, { value: string; txn: bigint }>();

  constructor(private readonly nextTxnId: () => Promise<bigint>) {}

  async commit(writes: Record<string, string>): Promise<bigint> {
    const txn = await this.nextTxnId();
    for (const [key, value] of Object.entries(writes)) this.data.set(key, { value, txn });
    return txn;
  }

  get(key: string): { value: string; txn: bigint } | undefined {
    return this.data.get(key);
  }
}

async function main(): Promise<void> {
  const client = new SequencerClient({
    servers: (process.env.SEQUENCER_SERVER || '127.0.0.1:10001').split(','),
    password: process.env.SEQUENCER_PASSWORD || undefined,
  });
  try {
    // One round trip per transaction. Ids increase in real time across every
    // node: if transaction A committed before B began, anywhere, A's id is smaller.
    const kv = new TinyKv(() => client.getNextSequence('kv-txn'));
    const t1 = await kv.commit({ 'user:1': 'alice' });
    const t2 = await kv.commit({ 'user:1': 'alice smith', 'user:2': 'bob' });
    console.log(`committed txn ${t1}, then txn ${t2}; user:1 was last written by txn ${kv.get('user:1')?.txn}`);

    // A node committing many small transactions can take ids in ranges of
    // 1,000 and hand them out locally. Still unique, and increasing on this
    // node; but another node may meanwhile use larger ids than the ones this
    // node still holds, and ids cached here when the process stops are never
    // used (a gap). Use it where ids need uniqueness, not cluster-wide order.
    const ids = client.allocator({ name: 'kv-txn-bulk', batch: 1000 });
    const bulk = new TinyKv(() => ids.next());
    const started = performance.now();
    let last = 0n;
    for (let i = 0; i < 10_000; i++) last = await bulk.commit({ [`event:${i}`]: 'payload' });
    const ms = (performance.now() - started).toFixed(0);
    console.log(`committed 10,000 transactions in ${ms} ms with cached ids; the last id was ${last}`);
  } catch (err) {
    if (!(err instanceof DolmeangiError)) throw err;
    console.error(`kv-transaction-ids: ${err.message}`);
    process.exitCode = 1;
  } finally {
    await client.close();
  }
}

await main();
