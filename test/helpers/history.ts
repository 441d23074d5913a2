/**
 * A history of sequence requests as clients saw them, and the checker that
 * decides whether the guarantees held:
 *   - unique: no number acknowledged twice (ranges never overlap);
 *   - increasing per client: in the order a client sent its requests;
 *   - real-time order: a number acknowledged before another request was sent
 *     is below every number that request got;
 *   - bounded gaps: numbers never acknowledged are explained by requests whose
 *     outcome is unknown ("maybe issued") or by crashes, at most `reserve` each;
 *     given which server process served each request, this holds per crash.
 * Times are monotonic nanoseconds (process.hrtime.bigint) of one test process.
 */

export interface Op {
  readonly client: string;
  readonly sequence: string;
  readonly count: bigint;
  readonly sentAt: bigint;
  receivedAt: bigint | null;
  /** First number of the acknowledged range. */
  first: bigint | null;
  /** true: the request may have taken numbers (timeout, connection lost); false: it surely did not (an error reply). */
  maybe: boolean;
  error: string | null;
}

export class History {
  readonly ops: Op[] = [];

  begin(client: string, count = 1n, sequence = 'default'): Op {
    const op: Op = { client, sequence, count, sentAt: process.hrtime.bigint(), receivedAt: null, first: null, maybe: false, error: null };
    this.ops.push(op);
    return op;
  }

  ok(op: Op, first: bigint): void {
    op.receivedAt = process.hrtime.bigint();
    op.first = first;
  }

  /** An error reply: the server refused, nothing was issued. */
  refused(op: Op, error: string): void {
    op.receivedAt = process.hrtime.bigint();
    op.error = error;
  }

  /** No reply (connection lost, timeout): the request may or may not have taken numbers. */
  lost(op: Op, error = 'no reply'): void {
    op.maybe = true;
    op.error = error;
  }

  get acknowledged(): Op[] {
    return this.ops.filter((o) => o.first !== null);
  }
}

export interface CheckOptions {
  /** Process crashes (kill -9) during the history, per sequence. */
  crashes?: number;
  /** The reservation window: the most one crash may skip. */
  reserve?: bigint;
  /** Numbers handed out before the history began are below this (e.g. --initial). */
  start?: bigint;
  /**
   * Which run of the server a request went to (0, 1, ...), where every run but the
   * last ended in a crash. The gaps are then bounded crash by crash: the numbers
   * skipped within a run and up to the next one's first are explained by that
   * run's lost requests and one window. Without it only the total is bounded, and
   * one crash skipping two windows would hide behind another that skipped none.
   */
  runOf?: (op: Op) => number;
}

export interface CheckResult {
  acknowledged: number;
  numbers: bigint;
  duplicates: string[];
  perClientViolations: string[];
  realTimeViolations: string[];
  /** Numbers never acknowledged between the lowest and highest acknowledged one. */
  gaps: bigint;
  /** How many unacknowledged numbers the maybe-issued requests and crashes can explain. */
  gapAllowance: bigint;
  gapViolation: string | null;
  /** With `runOf`: each run whose skipped numbers exceed what its lost requests and crash explain. */
  runGapViolations: string[];
}

const cmp = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);

/** Checks one sequence's history (filter by `sequence` first when there are several). */
export function checkHistory(history: History | Op[], opts: CheckOptions = {}): CheckResult {
  const ops = Array.isArray(history) ? history : history.ops;
  const acked = ops.filter((o) => o.first !== null);
  const result: CheckResult = {
    acknowledged: acked.length,
    numbers: 0n,
    duplicates: [],
    perClientViolations: [],
    realTimeViolations: [],
    gaps: 0n,
    gapAllowance: 0n,
    gapViolation: null,
    runGapViolations: [],
  };

  // Unique: sorted by first number, each range must end before the next begins.
  const byFirst = [...acked].sort((a, b) => cmp(a.first!, b.first!));
  for (let i = 0; i < byFirst.length; i++) {
    const o = byFirst[i]!;
    result.numbers += o.count;
    if (i > 0) {
      const prev = byFirst[i - 1]!;
      const prevEnd = prev.first! + prev.count;
      if (o.first! < prevEnd) {
        if (result.duplicates.length < 20) {
          result.duplicates.push(`${prev.client} got [${prev.first}, ${prevEnd - 1n}] and ${o.client} got [${o.first}, ${o.first! + o.count - 1n}]`);
        }
      } else {
        result.gaps += o.first! - prevEnd;
      }
    }
  }

  // Increasing per client, in sending order.
  const byClient = new Map<string, Op[]>();
  for (const o of acked) {
    let list = byClient.get(o.client);
    if (!list) byClient.set(o.client, (list = []));
    list.push(o);
  }
  for (const [client, list] of byClient) {
    list.sort((a, b) => cmp(a.sentAt, b.sentAt));
    for (let i = 1; i < list.length; i++) {
      const a = list[i - 1]!;
      const b = list[i]!;
      if (b.first! < a.first! + a.count && result.perClientViolations.length < 20) {
        result.perClientViolations.push(`${client}: sent later but got ${b.first} after ${a.first}`);
      }
    }
  }

  // Real-time order: sweep requests by send time, folding in every reply received before it.
  const bySent = [...acked].sort((a, b) => cmp(a.sentAt, b.sentAt));
  const byReceived = [...acked].sort((a, b) => cmp(a.receivedAt!, b.receivedAt!));
  let j = 0;
  let highest: Op | null = null;
  for (const b of bySent) {
    while (j < byReceived.length && byReceived[j]!.receivedAt! < b.sentAt) {
      const a = byReceived[j]!;
      if (highest === null || a.first! + a.count > highest.first! + highest.count) highest = a;
      j++;
    }
    if (highest !== null && b.first! < highest.first! + highest.count && result.realTimeViolations.length < 20) {
      result.realTimeViolations.push(
        `${b.client} sent its request after ${highest.client} had received ${highest.first! + highest.count - 1n}, yet got ${b.first}`,
      );
    }
  }

  // Gaps: each maybe-issued request explains up to its count, each crash up to one window.
  let allowance = 0n;
  for (const o of ops) if (o.first === null && o.maybe) allowance += o.count;
  allowance += BigInt(opts.crashes ?? 0) * (opts.reserve ?? 0n);
  if (opts.start !== undefined && byFirst.length > 0) result.gaps += byFirst[0]!.first! - opts.start;
  result.gapAllowance = allowance;
  if (result.gaps > allowance) {
    result.gapViolation = `${result.gaps} numbers were skipped, but lost requests and crashes explain at most ${allowance}`;
  }
  if (opts.runOf !== undefined) result.runGapViolations = checkRunGaps(ops, byFirst, opts.runOf, opts);
  return result;
}

/**
 * Charges each gap to the run of the range below it (a gap before the first
 * range, to that range's run) and compares each run's charge with what may
 * explain it: its lost requests, one window if it crashed, and, for the gap up
 * to the next run's first number, that next run's lost requests too (one may
 * have taken the numbers just below it). A gap that reaches past runs with no
 * acknowledged number draws on their budgets as well. A crash skips only what
 * lies above everything its run handed out, so gaps between two ranges of one
 * run must be explained by that run's lost requests alone.
 */
function checkRunGaps(ops: Op[], byFirst: Op[], runOf: (op: Op) => number, opts: CheckOptions): string[] {
  if (byFirst.length === 0) return [];
  let last = 0;
  for (const o of ops) last = Math.max(last, runOf(o));
  const window = (r: number): bigint => (r < last ? (opts.reserve ?? 0n) : 0n);
  const lost: bigint[] = [];
  const lostCount: number[] = [];
  for (let r = 0; r <= last; r++) {
    lost.push(0n);
    lostCount.push(0);
  }
  for (const o of ops) {
    if (o.first !== null || !o.maybe) continue;
    const r = runOf(o);
    lost[r]! += o.count;
    lostCount[r]!++;
  }
  const charged = lost.map(() => 0n);
  /** Gaps between two ranges of the same run: no crash can explain those. */
  const withinRun = lost.map(() => 0n);
  const allowed = lost.map((n, r) => n + window(r));
  /** Runs whose budget a spanning gap has used, so no other gap counts it again. */
  const lent = new Set<number>();
  const lend = (to: number, from: number): void => {
    if (lent.has(from)) return;
    lent.add(from);
    allowed[to]! += lost[from]! + window(from);
  };
  const firstRun = runOf(byFirst[0]!);
  if (opts.start !== undefined) charged[firstRun]! += byFirst[0]!.first! - opts.start;
  for (let r = 0; r < firstRun; r++) lend(firstRun, r);
  for (let i = 1; i < byFirst.length; i++) {
    const prev = byFirst[i - 1]!;
    const from = runOf(prev);
    const to = runOf(byFirst[i]!);
    if (to > from) {
      for (let r = from + 1; r < to; r++) lend(from, r);
      allowed[from]! += lost[to]!;
    }
    const gap = byFirst[i]!.first! - (prev.first! + prev.count);
    if (gap > 0n) {
      charged[from]! += gap;
      if (to === from) withinRun[from]! += gap;
    }
  }
  const violations: string[] = [];
  for (let r = 0; r <= last; r++) {
    if (withinRun[r]! > lost[r]!) {
      violations.push(
        `run ${r} skipped ${withinRun[r]} numbers between numbers it handed out, but its ${lostCount[r]} lost requests explain at most ${lost[r]}`,
      );
      continue;
    }
    if (charged[r]! > allowed[r]!) {
      violations.push(
        `run ${r}${r < last ? ' (ended by a crash)' : ''} skipped ${charged[r]} numbers, but its ${lostCount[r]} lost requests` +
          `${r < last ? `, one window of ${opts.reserve ?? 0n} and the next run's lost requests` : ''} explain at most ${allowed[r]}`,
      );
    }
  }
  return violations;
}

/** One change of leader under a fault, as the test saw it (monotonic ns). */
export interface Failover {
  /** When the fault was injected (kill, pause, cut). */
  readonly faultAt: bigint;
  /** When a request to the new leader had been answered. */
  readonly servingAt: bigint;
}

/**
 * Bounds what one failover skipped, where the history cannot tell which server
 * answered a request (group mode), so runOf cannot be given. The numbers skipped
 * are those between the highest acknowledged before the fault and the lowest
 * acknowledged to a request sent after the new leader served, that no request
 * acknowledged. One window explains them, and so do requests with unknown
 * outcome sent from `lostSince` until that request was sent. Returns the
 * violation, or null.
 */
export function checkFailover(history: History | Op[], f: Failover, opts: { reserve: bigint; lostSince: bigint }): string | null {
  const ops = Array.isArray(history) ? history : history.ops;
  let below: bigint | null = null;
  let after: Op | null = null;
  for (const o of ops) {
    if (o.first === null) continue;
    const end = o.first + o.count;
    if (o.receivedAt! < f.faultAt && (below === null || end > below)) below = end;
    if (o.sentAt > f.servingAt && (after === null || o.first < after.first!)) after = o;
  }
  if (below === null || after === null) return 'no number was acknowledged before the fault, or none to a request sent after the new leader served';
  const above = after.first!;
  // Below instead: a real-time order violation, which checkHistory reports.
  if (above <= below) return null;
  let covered = 0n;
  for (const o of ops) {
    if (o.first === null) continue;
    const lo = o.first > below ? o.first : below;
    const end = o.first + o.count;
    const hi = end < above ? end : above;
    if (hi > lo) covered += hi - lo;
  }
  const skipped = above - below - covered;
  let lost = 0n;
  let lostCount = 0;
  for (const o of ops) {
    if (o.first !== null || !o.maybe || o.sentAt < opts.lostSince || o.sentAt >= after.sentAt) continue;
    lost += o.count;
    lostCount++;
  }
  if (skipped <= opts.reserve + lost) return null;
  return (
    `a failover skipped ${skipped} numbers between ${below - 1n} and ${above}, but one window of ${opts.reserve} ` +
    `and ${lostCount} lost requests explain at most ${opts.reserve + lost}`
  );
}

/** Throws with every violation listed; for use in tests. */
export function assertHistory(history: History | Op[], opts: CheckOptions = {}): CheckResult {
  const r = checkHistory(history, opts);
  const problems = [
    ...r.duplicates.map((d) => `duplicate: ${d}`),
    ...r.perClientViolations.map((d) => `order within a client: ${d}`),
    ...r.realTimeViolations.map((d) => `real-time order: ${d}`),
    ...(r.gapViolation ? [`gap: ${r.gapViolation}`] : []),
    ...r.runGapViolations.map((d) => `gap: ${d}`),
  ];
  if (problems.length > 0) throw new Error(`history check failed (${r.acknowledged} acknowledged):\n  ${problems.join('\n  ')}`);
  return r;
}
