/** The checker must catch every kind of violation it claims to; otherwise the fault tests prove nothing. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { History, checkFailover, checkHistory } from '../helpers/history.js';

/** Builds an op with explicit times (ns), bypassing the clock. */
function op(h: History, client: string, sentAt: number, receivedAt: number | null, first: number | null, count = 1, maybe = false) {
  const o = h.begin(client, BigInt(count));
  (o as { sentAt: bigint }).sentAt = BigInt(sentAt);
  o.receivedAt = receivedAt === null ? null : BigInt(receivedAt);
  o.first = first === null ? null : BigInt(first);
  o.maybe = maybe;
  return o;
}

test('a clean history passes', () => {
  const h = new History();
  op(h, 'a', 0, 10, 1);
  op(h, 'b', 5, 12, 2, 10);
  op(h, 'a', 11, 20, 12);
  const r = checkHistory(h);
  assert.deepEqual([r.duplicates, r.perClientViolations, r.realTimeViolations, r.gapViolation], [[], [], [], null]);
  assert.equal(r.numbers, 12n);
});

test('overlapping ranges are duplicates', () => {
  const h = new History();
  op(h, 'a', 0, 1, 1, 10);
  op(h, 'b', 0, 1, 10);
  assert.equal(checkHistory(h).duplicates.length, 1);
});

test('the same number given to two clients is a duplicate, as are two batches starting at the same number', () => {
  const h = new History();
  op(h, 'a', 0, 1, 5);
  op(h, 'b', 0, 1, 5);
  assert.equal(checkHistory(h).duplicates.length, 1);
  const batches = new History();
  op(batches, 'a', 0, 1, 100, 3);
  op(batches, 'b', 0, 1, 100, 50);
  assert.equal(checkHistory(batches).duplicates.length, 1);
});

test('real-time order is checked against the largest number received so far, not the last', () => {
  const h = new History();
  op(h, 'a', 0, 10, 10);
  op(h, 'b', 5, 12, 2); // concurrent with a: fine, but it is received last
  op(h, 'c', 15, 20, 7); // sent after a's 10 was received
  assert.equal(checkHistory(h).realTimeViolations.length, 1);
});

test('real-time order follows when replies were received, not when requests were sent', () => {
  const h = new History();
  op(h, 'x', 0, 100, 1); // sent first, received last
  op(h, 'y', 10, 20, 10);
  op(h, 'z', 50, 60, 5); // sent after y's 10 was received
  assert.equal(checkHistory(h).realTimeViolations.length, 1);
});

test('a smaller number for a request sent after a reply was received violates real-time order', () => {
  const h = new History();
  op(h, 'a', 0, 10, 5);
  op(h, 'b', 11, 20, 4);
  assert.equal(checkHistory(h).realTimeViolations.length, 1);
  // Concurrent requests may be answered in any order.
  const c = new History();
  op(c, 'a', 0, 10, 5);
  op(c, 'b', 9, 20, 4);
  assert.equal(checkHistory(c).realTimeViolations.length, 0);
});

test('a client whose later request got a smaller number is flagged', () => {
  const h = new History();
  op(h, 'a', 0, 10, 5);
  op(h, 'a', 1, 11, 3);
  assert.equal(checkHistory(h).perClientViolations.length, 1);
});

test('gaps must be explained by lost requests or crashes', () => {
  const h = new History();
  op(h, 'a', 0, 1, 1);
  op(h, 'a', 2, 3, 5);
  assert.match(checkHistory(h).gapViolation ?? '', /3 numbers were skipped/);
  op(h, 'b', 0, null, null, 3, true);
  assert.equal(checkHistory(h).gapViolation, null);
  const crash = new History();
  op(crash, 'a', 0, 1, 1);
  op(crash, 'a', 2, 3, 102);
  assert.ok(checkHistory(crash, { crashes: 1, reserve: 99n }).gapViolation);
  assert.equal(checkHistory(crash, { crashes: 1, reserve: 100n }).gapViolation, null);
  // A refused request explains nothing.
  op(crash, 'c', 0, 1, null, 5, false);
  assert.ok(checkHistory(crash, { crashes: 1, reserve: 99n }).gapViolation);
});

test('numbers skipped before the first acknowledged one count when the start is known', () => {
  const h = new History();
  op(h, 'a', 0, 1, 3);
  assert.ok(checkHistory(h, { start: 1n }).gapViolation);
  assert.equal(checkHistory(h).gapViolation, null);
});

/** An op of run `run` (its client is named after it), for the per-crash bound. */
function inRun(h: History, run: number, sentAt: number, receivedAt: number | null, first: number | null, count = 1, maybe = false) {
  return op(h, `run${run}/c0`, sentAt, receivedAt, first, count, maybe);
}
const runOf = (o: { client: string }) => Number(/^run(\d+)\//.exec(o.client)![1]);

test('with runs known, each crash is bounded by one window, not the total', () => {
  const h = new History();
  inRun(h, 0, 0, 1, 1);
  inRun(h, 1, 10, 11, 202); // the first crash skipped 200
  inRun(h, 2, 20, 21, 203); // the second skipped none
  const opts = { crashes: 2, reserve: 100n, start: 1n };
  assert.equal(checkHistory(h, opts).gapViolation, null, 'the total alone fits two windows');
  const r = checkHistory(h, { ...opts, runOf });
  assert.deepEqual(r.runGapViolations, [
    "run 0 (ended by a crash) skipped 200 numbers, but its 0 lost requests, one window of 100 and the next run's lost requests explain at most 100",
  ]);
  // A request lost in run 2 cannot explain what run 0's crash skipped.
  inRun(h, 2, 22, null, null, 100, true);
  assert.equal(checkHistory(h, { ...opts, runOf }).runGapViolations.length, 1);
  // One lost in run 0 can, and so can one lost in run 1: it may hold the numbers just below run 1's first.
  const own = new History();
  inRun(own, 0, 0, 1, 1);
  inRun(own, 0, 2, null, null, 100, true);
  inRun(own, 1, 10, 11, 202);
  assert.deepEqual(checkHistory(own, { crashes: 1, reserve: 100n, start: 1n, runOf }).runGapViolations, []);
  const next = new History();
  inRun(next, 0, 0, 1, 1);
  inRun(next, 1, 10, null, null, 100, true);
  inRun(next, 1, 10, 11, 202);
  assert.deepEqual(checkHistory(next, { crashes: 1, reserve: 100n, start: 1n, runOf }).runGapViolations, []);
});

test('a gap within the last run is explained by its lost requests only', () => {
  const h = new History();
  inRun(h, 0, 0, 1, 1);
  inRun(h, 1, 10, 11, 50);
  inRun(h, 1, 12, 13, 53);
  const opts = { crashes: 1, reserve: 100n, start: 1n, runOf };
  assert.equal(checkHistory(h, opts).runGapViolations.length, 1, 'run 1 skipped 51 and 52 with nothing lost');
  inRun(h, 1, 11, null, null, 2, true);
  assert.deepEqual(checkHistory(h, opts).runGapViolations, []);
});

test('a gap within a run that ended in a crash is not explained by the crash window', () => {
  const h = new History();
  inRun(h, 0, 0, 1, 1);
  inRun(h, 0, 2, 3, 50); // 2..49 skipped while run 0 was still serving
  inRun(h, 1, 10, 11, 51);
  const opts = { crashes: 1, reserve: 100n, start: 1n, runOf };
  assert.equal(checkHistory(h, opts).gapViolation, null, 'the total alone fits one window');
  assert.deepEqual(checkHistory(h, opts).runGapViolations, [
    'run 0 skipped 48 numbers between numbers it handed out, but its 0 lost requests explain at most 0',
  ]);
  inRun(h, 0, 1, null, null, 48, true);
  assert.deepEqual(checkHistory(h, opts).runGapViolations, []);
});

test('runs that acknowledged nothing lend their window to the gap that spans them', () => {
  const h = new History();
  inRun(h, 0, 0, 1, 1);
  inRun(h, 1, 5, null, null, 1, true);
  inRun(h, 2, 10, 11, 180); // two crashes, 178 skipped
  const opts = { crashes: 2, reserve: 100n, start: 1n, runOf };
  assert.deepEqual(checkHistory(h, opts).runGapViolations, []);
  const first = new History();
  inRun(first, 0, 0, null, null, 1, true);
  inRun(first, 1, 10, 11, 102); // run 0 acknowledged nothing; its lost request and window cover 1..101
  assert.deepEqual(checkHistory(first, { crashes: 1, reserve: 100n, start: 1n, runOf }).runGapViolations, []);
  assert.equal(checkHistory(first, { crashes: 1, reserve: 10n, start: 1n, runOf }).runGapViolations.length, 1);
});

test('a failover is bounded by one window and the requests lost around it, not by a total over many', () => {
  const h = new History();
  op(h, 'a', 0, 10, 1, 5); // 1..5 before the fault at 20
  op(h, 'a', 11, 25, 6); // answered by the old leader after the fault: covered
  op(h, 'b', 15, null, null, 1, true); // lost around the fault
  op(h, 'a', 50, 60, 208); // the new leader serves from 208; the probe saw it at 60
  op(h, 'a', 70, 80, 209); // sent after it served
  const f = { faultAt: 20n, servingAt: 60n };
  // 7..207 skipped: 201 numbers, one window of 200 and one lost request.
  assert.equal(checkFailover(h, f, { reserve: 200n, lostSince: 0n }), null);
  assert.equal(
    checkFailover(h, f, { reserve: 199n, lostSince: 0n }),
    'a failover skipped 201 numbers between 5 and 209, but one window of 199 and 1 lost requests explain at most 200',
  );
  // A request lost before lostSince, or sent after the new leader served, explains nothing here.
  assert.notEqual(checkFailover(h, f, { reserve: 199n, lostSince: 16n }), null);
  const late = new History();
  op(late, 'a', 0, 10, 1, 5);
  op(late, 'a', 50, 60, 208);
  op(late, 'a', 70, 80, 209);
  op(late, 'b', 75, null, null, 1, true);
  assert.notEqual(checkFailover(late, f, { reserve: 201n, lostSince: 0n }), null);
  // Three windows skipped at one failover fail, however few the others skipped.
  const three = new History();
  op(three, 'a', 0, 10, 1);
  op(three, 'a', 70, 80, 602);
  assert.match(checkFailover(three, f, { reserve: 200n, lostSince: 0n })!, /skipped 600 numbers/);
  // With nothing acknowledged on one side, the failover cannot be judged, and says so.
  const none = new History();
  op(none, 'a', 70, 80, 602);
  assert.match(checkFailover(none, f, { reserve: 200n, lostSince: 0n })!, /no number was acknowledged before the fault/);
});
