/**
 * Load through the client library, recorded in a History: several workers,
 * each calling getNextSequence (and, if asked, getBatch now and then) in a loop
 * until stopped or out of budget.
 * A call that fails without a reply counts as "maybe issued" unless the client
 * says the request never left the process.
 */
import {
  ConnectionClosedError,
  NoServerAvailableError,
  NotLeaderError,
  SequencerClient,
  ServerError,
  type SequencerClientOptions,
} from '../../src/index.js';
import type { History, Op } from './history.js';

export interface ClientLoadOptions extends SequencerClientOptions {
  workers: number;
  /** Upper bound on calls in total. */
  maxCalls: number;
  /** Stop by this time (ms since the epoch) at the latest. */
  deadline: number;
  label: string;
  sequence?: string;
  /** Every this many calls of a worker, a getBatch of `batchSize` instead (a batch's whole range must stay below what follows it). */
  batchEvery?: number;
  batchSize?: bigint;
}

export interface ClientLoad {
  readonly acked: () => number;
  readonly errors: Map<string, number>;
  stop(): Promise<void>;
}

/**
 * Records a failed GETSEQ or GETSEQ_BATCH: refused when the client knows no number was taken (an
 * error reply, NOTLEADER, no server reached, never sent), else "maybe issued".
 */
export function recordFailure(history: History, op: Op, err: unknown): void {
  const surelyNotIssued =
    err instanceof NotLeaderError ||
    err instanceof ServerError ||
    err instanceof NoServerAvailableError ||
    (err instanceof ConnectionClosedError && !err.requestSent);
  if (surelyNotIssued) history.refused(op, String((err as Error).message));
  else history.lost(op, String((err as Error).message));
}

/** Polls GETSEQ through `client` until one succeeds (a new leader serving, say); every attempt goes into `history`. */
export async function firstSuccess(history: History, client: SequencerClient, label: string, timeoutMs: number): Promise<bigint> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const op = history.begin(label);
    try {
      const n = await client.getNextSequence();
      history.ok(op, n);
      return n;
    } catch (err) {
      // NOTLEADER, no server reached and the like took no number: only a lost reply may have.
      recordFailure(history, op, err);
      if (Date.now() > deadline) throw new Error(`no number within ${timeoutMs} ms: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

export function startClientLoad(history: History, opts: ClientLoadOptions): ClientLoad {
  const client = new SequencerClient(opts);
  let calls = 0;
  let acked = 0;
  let stopped = false;
  const errors = new Map<string, number>();
  const worker = async (w: number) => {
    for (let own = 1; !stopped && calls < opts.maxCalls && Date.now() < opts.deadline; own++) {
      calls++;
      const batch = opts.batchEvery !== undefined && own % opts.batchEvery === 0 ? (opts.batchSize ?? 10n) : null;
      const op = history.begin(`${opts.label}/w${w}`, batch ?? 1n, opts.sequence ?? 'default');
      try {
        history.ok(op, batch === null ? await client.getNextSequence(opts.sequence) : (await client.getBatch(batch, opts.sequence)).first);
        acked++;
      } catch (err) {
        const key = (err as Error).constructor.name;
        errors.set(key, (errors.get(key) ?? 0) + 1);
        recordFailure(history, op, err);
        // Back off a little so a dead cluster is not hammered in a tight loop.
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  const running = Promise.all(Array.from({ length: opts.workers }, (_, i) => worker(i)));
  return {
    acked: () => acked,
    errors,
    async stop() {
      stopped = true;
      await running;
      await client.close();
    },
  };
}
