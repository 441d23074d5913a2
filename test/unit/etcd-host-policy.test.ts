/**
 * The host policy of the etcd client (election/etcd.ts): which member a call may
 * go to after failures, on a clock the test moves.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isBrokenCircuitError } from 'cockatiel';
import { GRPCCancelledError, GRPCDeadlineExceededError, EtcdPermissionDeniedError } from 'etcd3';
import { SKIP_MAX_MS, SKIP_MIN_MS, skipWhileOthersAnswer, type Answering } from '../../src/election/etcd.js';

type Policy = { execute<T>(fn: (context: { signal: AbortSignal }) => Promise<T> | T): Promise<T> };

function members(n: number) {
  let t = 1_000_000;
  const clock = { now: () => t, advance: (ms: number) => (t += ms) };
  const answering: Answering = new Set();
  const policies = Array.from({ length: n }, () => skipWhileOthersAnswer(answering, clock.now) as unknown as Policy);
  const ok = (i: number) => policies[i]!.execute(() => 'answer');
  const fail = (i: number, err: Error = new GRPCDeadlineExceededError('deadline')) =>
    policies[i]!.execute(() => {
      throw err;
    });
  /** 'skipped' when the policy passed the member over without calling it, 'called' when it called it. */
  const tried = async (i: number): Promise<'skipped' | 'called'> => {
    let called = false;
    try {
      await policies[i]!.execute(() => {
        called = true;
        return 'answer';
      });
    } catch (err) {
      assert.ok(isBrokenCircuitError(err), String(err));
    }
    return called ? 'called' : 'skipped';
  };
  return { clock, policies, ok, fail, tried };
}

test('a member whose call failed is passed over while another answers, then tried again', async () => {
  const m = members(3);
  await m.ok(1);
  await assert.rejects(m.fail(0));
  assert.equal(await m.tried(0), 'skipped');
  m.clock.advance(SKIP_MIN_MS - 1);
  assert.equal(await m.tried(0), 'skipped');
  m.clock.advance(1);
  assert.equal(await m.tried(0), 'called');
});

test('when no member answers, none is passed over: all of etcd down, every member is tried on each call', async () => {
  const m = members(3);
  for (const i of [0, 1, 2]) await assert.rejects(m.fail(i));
  for (let call = 0; call < 3; call++) {
    for (const i of [0, 1, 2]) {
      // Called, and failing again: not passed over (that would reject with a broken circuit instead).
      await assert.rejects(m.fail(i), GRPCDeadlineExceededError, `call ${call} to member ${i}`);
    }
    m.clock.advance(100);
  }
  // The first to answer again makes the others wait their pause.
  await m.ok(0);
  assert.equal(await m.tried(1), 'skipped');

  // With one endpoint there is never another to answer: it is never passed over.
  const one = members(1);
  await one.ok(0);
  await assert.rejects(one.fail(0));
  await assert.rejects(one.fail(0), GRPCDeadlineExceededError, 'called again at once');
});

test('a member that fails again after its pause is passed over twice as long, up to the cap; an answer resets it', async () => {
  const m = members(2);
  await m.ok(1);
  await assert.rejects(m.fail(0));
  let skip = SKIP_MIN_MS;
  for (let round = 0; round < 6; round++) {
    m.clock.advance(skip);
    await assert.rejects(m.fail(0));
    skip = Math.min(skip * 2, SKIP_MAX_MS);
    m.clock.advance(skip - 1);
    assert.equal(await m.tried(0), 'skipped', `round ${round}: still passed over ${skip - 1} ms after`);
    m.clock.advance(1);
    assert.equal(await m.tried(0), 'called', `round ${round}: tried again after ${skip} ms`);
    // tried() answered: back to the shortest pause; fail it again to go on doubling from there.
    await assert.rejects(m.fail(0));
    skip = SKIP_MIN_MS;
  }
});

test('calls that fail together count as one failure; so do failures while no member answers', async () => {
  const m = members(2);
  await m.ok(1);
  // Three calls in flight to a member that hangs: all three fail at the deadline.
  const hung = Array.from({ length: 3 }, () =>
    m.policies[0]!.execute(
      () =>
        new Promise((_, reject) => {
          setImmediate(() => reject(new GRPCDeadlineExceededError('deadline')));
        }),
    ),
  );
  m.clock.advance(1000);
  for (const h of hung) await assert.rejects(h);
  m.clock.advance(SKIP_MIN_MS);
  assert.equal(await m.tried(0), 'called', 'passed over for the shortest pause, not doubled');

  const all = members(2);
  for (let round = 0; round < 5; round++) {
    await assert.rejects(all.fail(0));
    await assert.rejects(all.fail(1));
    all.clock.advance(1000);
  }
  await all.ok(1);
  all.clock.advance(SKIP_MIN_MS);
  assert.equal(await all.tried(0), 'called', 'the outage did not lengthen the pause');
});

test('neither a cancelled call nor the opening of a stream counts; an error that is not the member\'s fault neither', async () => {
  const m = members(2);
  await m.ok(1);
  await assert.rejects(m.fail(0, new GRPCCancelledError('cancelled')));
  assert.equal(await m.tried(0), 'called', 'a watch we cancelled says nothing against its member');
  await assert.rejects(m.fail(0, new EtcdPermissionDeniedError('denied')));
  assert.equal(await m.tried(0), 'called');

  // A stream opened on a member that is down is no answer: the other, failed, stays passed over.
  const s = members(3);
  await s.ok(2);
  await assert.rejects(s.fail(1));
  await assert.rejects(s.fail(2));
  await s.policies[0]!.execute(() => ({ on: () => {}, cancel: () => {} }));
  assert.equal(await s.tried(1), 'called', 'no member has answered: all are tried');
});
