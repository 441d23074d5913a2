/**
 * Group-mode storage: the high-water marks live in etcd, one key per sequence
 * (`<prefix>marks/<name>`), as decimal text so 64-bit values stay exact.
 *
 * A store belongs to one leadership term, and every write is a transaction
 * with two guards:
 * - the term: `<prefix>leader` still has this term's create revision. A
 *   deposed leader can never write, however late its request arrives.
 * - our own last write: `<prefix>writer` still has the mod revision our last
 *   confirmed write gave it. A write we gave up on (timeout) may still be
 *   applied later, e.g. when a paused etcd member forwards it on waking; the
 *   guard makes sure it can never land after a newer write and take a mark
 *   back down below numbers already handed out.
 */
import { CompareResult, CompareTarget, type Etcd3, type ICompare, type IRangeRequest, type IRangeResponse, type IRequestOp, type ITxnResponse } from 'etcd3';
import { END, checkMarks, isValidName, NAME_RULE, parseUnsigned } from '../core/limits.js';
import type { Marks, Store } from '../core/ports.js';
import { ETCD_CALL_TIMEOUT_MS, etcdErrorReason, withTimeout, type LeadershipTerm } from '../election/etcd.js';
import { FencedError, PersistenceError, StateCorruptError } from '../errors.js';

/** etcd refuses transactions of more than 128 operations (--max-txn-ops); one is the writer key. */
const MARKS_PER_TXN = 127;

/**
 * Marks read per range request when loading: etcd's client refuses replies over
 * 4 MiB, which one read of every mark would pass at around 60,000 sequences.
 */
const LOAD_PAGE = 10_000;

/** A mark key no leader may load, with how to mend it in etcd. */
function corruptMark(key: string, detail: string): StateCorruptError {
  return new StateCorruptError(key, detail, {
    kind: 'etcd key',
    remedy:
      'A mark is a decimal number: put one above the highest number handed out from that sequence ' +
      `(etcdctl put ${key} <n>), delete a key that names no sequence, or restore etcd from a backup.`,
  });
}

/** The first key after every key that starts with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export class EtcdStore implements Store {
  readonly description: string;
  private readonly marksPrefix: string;
  private readonly leaderKey: Buffer;
  private readonly writerKey: Buffer;
  /** The writer key's mod revision after our last confirmed write; null until read. */
  private writerRevision: string | null = null;
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    prefix: string,
    private readonly term: LeadershipTerm,
    private readonly timeoutMs: number = ETCD_CALL_TIMEOUT_MS,
    private readonly pageSize: number = LOAD_PAGE,
  ) {
    this.marksPrefix = `${prefix}marks/`;
    this.leaderKey = Buffer.from(term.key);
    this.writerKey = Buffer.from(`${prefix}writer`);
    this.description = `etcd:${this.marksPrefix} (term ${term.revision})`;
  }

  async load(): Promise<Map<string, bigint>> {
    this.assertOpen();
    const marksKey = Buffer.from(this.marksPrefix);
    const rangeEnd = prefixEnd(marksKey);
    // The first page and the writer key in one read-only transaction; the other
    // pages at that transaction's revision, so that all of them show one moment.
    const res = await this.txn('reading marks', {
      compare: [],
      success: [
        { request_range: { key: marksKey, range_end: rangeEnd, limit: this.pageSize } },
        { request_range: { key: this.writerKey } },
      ],
      failure: [],
    });
    const marks = new Map<string, bigint>();
    let page = res.responses[0]?.response_range;
    while (page !== undefined) {
      for (const kv of page.kvs) this.addMark(marks, kv.key, kv.value);
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || last === undefined) break;
      const from = Buffer.concat([last.key, Buffer.from([0])]);
      page = await this.range('reading marks', { key: from, range_end: rangeEnd, limit: this.pageSize, revision: res.header.revision });
    }
    this.writerRevision = writerRevisionIn(res, 1);
    return marks;
  }

  private addMark(marks: Map<string, bigint>, rawKey: Buffer, value: Buffer): void {
    const key = rawKey.toString('utf8');
    const name = key.slice(this.marksPrefix.length);
    if (!isValidName(name)) throw corruptMark(key, `'${name}' is not a sequence name (${NAME_RULE})`);
    const text = value.toString('utf8');
    const mark = parseUnsigned(text);
    if (mark === undefined || mark > END) {
      // Quoted as JSON: a trailing newline (`echo 5 | etcdctl put ...`) must show.
      throw corruptMark(key, `expected a decimal number from 0 to ${END}, found ${JSON.stringify(text.slice(0, 40))}`);
    }
    marks.set(name, mark);
  }

  async persist(marks: Marks): Promise<void> {
    this.assertOpen();
    checkMarks(marks);
    if (this.writerRevision === null) await this.readWriter();
    const entries = [...marks];
    // Each chunk commits on its own; if a later one fails, the caller retries them all.
    for (let i = 0; i < entries.length; i += MARKS_PER_TXN) {
      await this.write(entries.slice(i, i + MARKS_PER_TXN));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private async write(chunk: Array<[string, bigint]>): Promise<void> {
    const puts: IRequestOp[] = chunk.map(([name, mark]) => ({
      request_put: { key: Buffer.from(this.marksPrefix + name), value: Buffer.from(mark.toString()) },
    }));
    puts.push({ request_put: { key: this.writerKey, value: Buffer.from(this.term.revision) } });
    // A second compare failure on the writer key would mean two late writes of ours landed back to back.
    for (let attempt = 0; attempt < 2; attempt++) {
      const compare: ICompare[] = [
        { key: this.leaderKey, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: this.term.revision },
        // Revisions start over when etcd is restored from a backup: the lease tells terms apart then too.
        { key: this.leaderKey, target: CompareTarget.Lease, result: CompareResult.Equal, lease: this.term.leaseId },
        { key: this.writerKey, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: this.writerRevision! },
      ];
      const res = await this.txn('writing marks', {
        compare,
        success: puts,
        failure: [{ request_range: { key: this.leaderKey } }, { request_range: { key: this.writerKey } }],
      });
      if (res.succeeded) {
        this.writerRevision = res.header.revision;
        return;
      }
      const leader = res.responses[0]?.response_range?.kvs[0];
      if (leader === undefined || leader.create_revision !== this.term.revision || leader.lease !== this.term.leaseId) {
        throw new FencedError(
          `${this.term.key} no longer belongs to term ${this.term.revision} (${leader === undefined ? 'no leader' : 'another node leads'})`,
        );
      }
      // A write of ours that we had given up on has landed since; ours now goes on top of it.
      this.writerRevision = writerRevisionIn(res, 1);
    }
    throw new PersistenceError('earlier writes to etcd kept landing late; retrying');
  }

  private async readWriter(): Promise<void> {
    const res = await this.txn('reading the writer key', {
      compare: [],
      success: [{ request_range: { key: this.writerKey } }],
      failure: [],
    });
    this.writerRevision = writerRevisionIn(res, 0);
  }

  private txn(what: string, txn: { compare: ICompare[]; success: IRequestOp[]; failure: IRequestOp[] }): Promise<ITxnResponse> {
    return this.call(what, this.client.kv.txn(txn));
  }

  private range(what: string, req: IRangeRequest): Promise<IRangeResponse> {
    return this.call(what, this.client.kv.range(req));
  }

  /** An etcd call with this store's deadline; every failure becomes a PersistenceError saying what was tried. */
  private async call<T>(what: string, request: Promise<T>): Promise<T> {
    try {
      return await withTimeout(request, this.timeoutMs, what);
    } catch (err) {
      throw new PersistenceError(`${what} in etcd: ${etcdErrorReason(err)}`, { cause: err });
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new PersistenceError('the etcd store of this term is closed');
  }
}

/** The writer key's mod revision in response `i` of a transaction ('0' when the key does not exist yet). */
function writerRevisionIn(res: ITxnResponse, i: number): string {
  return res.responses[i]?.response_range?.kvs[0]?.mod_revision ?? '0';
}
