/**
 * CountedHistogram must expose exactly what prom-client's Histogram would for the
 * same observations: same lines, same cumulative counts, same sum.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { CountedHistogram } from '../../src/http/counted-histogram.js';

const BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];

async function both(values: number[]): Promise<{ ours: string; theirs: string }> {
  const a = new Registry();
  const b = new Registry();
  const ours = new CountedHistogram('h_seconds', 'A histogram.', BUCKETS, a);
  const theirs = new Histogram({ name: 'h_seconds', help: 'A histogram.', buckets: BUCKETS, registers: [b] });
  for (const v of values) {
    ours.observe(v);
    theirs.observe(v);
  }
  return { ours: await a.metrics(), theirs: await b.metrics() };
}

test('exposition matches prom-client for values on, between and beyond the bounds', async () => {
  const values = [0, ...BUCKETS, ...BUCKETS.map((x) => x * 1.5), 0.2, 5, 1e-9];
  const { ours, theirs } = await both(values);
  assert.equal(ours, theirs);
  assert.match(ours, /^h_seconds_bucket\{le="0.00001"\} 3$/m);
  assert.match(ours, /^h_seconds_count 28$/m);
});

test('exposition matches prom-client for any observations (property)', async () => {
  const value = fc.oneof(fc.constantFrom(...BUCKETS), fc.double({ min: 0, max: 1, noNaN: true }));
  await fc.assert(
    fc.asyncProperty(fc.array(value, { maxLength: 200 }), async (values) => {
      const { ours, theirs } = await both(values);
      assert.equal(ours, theirs);
    }),
    { numRuns: 200 },
  );
});

test('reset() empties it, and a registry reset reaches it', async () => {
  const r = new Registry();
  const h = new CountedHistogram('h_seconds', 'A histogram.', BUCKETS, r);
  h.observe(0.003);
  assert.match(await r.metrics(), /^h_seconds_count 1$/m);
  r.resetMetrics();
  assert.match(await r.metrics(), /^h_seconds_count 0$/m);
  assert.match(await r.metrics(), /^h_seconds_sum 0$/m);
});

test('a value that is not a finite number is not counted', async () => {
  const r = new Registry();
  const h = new CountedHistogram('h_seconds', 'A histogram.', BUCKETS, r);
  h.observe(Number.NaN);
  h.observe(Number.POSITIVE_INFINITY);
  h.observe(0.003);
  const text = await r.metrics();
  assert.match(text, /^h_seconds_count 1$/m);
  assert.match(text, /^h_seconds_sum 0.003$/m);
});
