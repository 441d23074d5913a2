/**
 * The metrics module on its own: bounded sequence labels, values read at scrape
 * time, the leader gauge only in group mode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import perfHooks from 'node:perf_hooks';
import { Metrics, OTHER_SEQUENCES, type NodeView } from '../../src/http/metrics.js';
import { CommandStats } from '../../src/commands/index.js';
import type { SequenceSnapshot } from '../../src/core/sequencer.js';
import { parseMetrics } from '../helpers/http.js';

const END = 1n << 63n;

function view(sequences: SequenceSnapshot[], extra: Partial<NodeView> = {}): NodeView {
  const stats = new CommandStats();
  return {
    version: '9.9.9',
    maxConnections: 10,
    maxSequences: 1000,
    mode: () => 'durable',
    sequences: () => sequences,
    commands: () => stats,
    connections: () => ({ open: 0, accepted: 0, rejected: 0, outputLimitDisconnects: 0, acceptErrors: 0, certificateRefusals: 0 }),
    ready: () => true,
    persistenceUp: () => true,
    ...extra,
  };
}

const seq = (name: string, next: bigint, issued: bigint): SequenceSnapshot => ({ name, next, durableMark: next, issued });

test('past the label limit, sequences share one series: issued summed, remaining the least', async () => {
  const sequences = [seq('a', 11n, 10n), seq('b', 21n, 20n), seq('c', 4n, 3n), seq('d', END - 5n, 7n), seq('e', 100n, 99n)];
  const m = parseMetrics(await new Metrics(view(sequences), { labelledSequences: 2 }).render());
  assert.equal(m.get('dolmeangi_issued_numbers_total{sequence="a"}'), 10);
  assert.equal(m.get('dolmeangi_issued_numbers_total{sequence="b"}'), 20);
  assert.equal(m.get(`dolmeangi_issued_numbers_total{sequence="${OTHER_SEQUENCES}"}`), 3 + 7 + 99);
  assert.equal(m.get(`dolmeangi_sequence_remaining{sequence="${OTHER_SEQUENCES}"}`), 5, 'exact when small');
  assert.equal(m.get(`dolmeangi_sequence_used_ratio{sequence="${OTHER_SEQUENCES}"}`), 1 - 5 / 2 ** 63);
  assert.equal(m.has(`dolmeangi_sequence_next{sequence="${OTHER_SEQUENCES}"}`), false);
  assert.equal(m.get('dolmeangi_sequence_next{sequence="b"}'), 21);
  assert.equal(m.get('dolmeangi_sequences'), 5);
  assert.equal([...m.keys()].filter((k) => k.startsWith('dolmeangi_issued_numbers_total')).length, 3);
});

test('connection counters are read from the server at each scrape', async () => {
  const counts = { open: 3, accepted: 40, rejected: 5, outputLimitDisconnects: 2, acceptErrors: 7, certificateRefusals: 4 };
  const m = parseMetrics(await new Metrics(view([], { connections: () => counts })).render());
  assert.deepEqual(
    ['dolmeangi_connections', 'dolmeangi_connections_accepted_total', 'dolmeangi_connections_rejected_total', 'dolmeangi_output_limit_disconnects_total', 'dolmeangi_accept_errors_total', 'dolmeangi_tls_certificate_refusals_total'].map((k) => m.get(k)),
    [3, 40, 5, 2, 7, 4],
  );
});

test('values are read at each scrape; an exhausted sequence has nothing left', async () => {
  const sequences = [seq('x', 1n, 0n)];
  const metrics = new Metrics(view(sequences));
  assert.equal(parseMetrics(await metrics.render()).get('dolmeangi_issued_numbers_total{sequence="x"}'), 0);
  sequences[0] = seq('x', END, 42n);
  const m = parseMetrics(await metrics.render());
  assert.equal(m.get('dolmeangi_issued_numbers_total{sequence="x"}'), 42);
  assert.equal(m.get('dolmeangi_sequence_remaining{sequence="x"}'), 0);
  assert.equal(m.get('dolmeangi_sequence_used_ratio{sequence="x"}'), 1);
});

test('events: persist durations in seconds, failures, AUTH failures, refused ops connections, chunk durations', async () => {
  const metrics = new Metrics(view([]));
  metrics.persisted(2);
  metrics.persisted(2000);
  metrics.persistFailed();
  metrics.authFailed();
  metrics.authFailed();
  metrics.opsRefused();
  metrics.chunkHandled(0.02);
  const m = parseMetrics(await metrics.render());
  assert.equal(m.get('dolmeangi_persist_duration_seconds_count'), 2);
  assert.equal(m.get('dolmeangi_persist_duration_seconds_sum'), 2.002);
  assert.equal(m.get('dolmeangi_persist_duration_seconds_bucket{le="0.0025"}'), 1);
  assert.equal(m.get('dolmeangi_persist_failures_total'), 1);
  assert.equal(m.get('dolmeangi_auth_failures_total'), 2);
  assert.equal(m.get('dolmeangi_ops_connections_refused_total'), 1);
  assert.equal(m.get('dolmeangi_request_chunk_duration_seconds_bucket{le="0.000025"}'), 1);
});

test('the leader gauge and the count of terms served exist only in group mode', async () => {
  const single = parseMetrics(await new Metrics(view([])).render());
  assert.equal(single.has('dolmeangi_leader'), false);
  assert.equal([...single.keys()].some((k) => k.startsWith('dolmeangi_leader_terms_total')), false);
  let leading = false;
  let terms = 0;
  const metrics = new Metrics(
    view([], { mode: () => 'group', group: { prefix: '/dolmeangi/orders/', leading: () => leading, termsServed: () => terms } }),
  );
  const follower = parseMetrics(await metrics.render());
  assert.equal(follower.get('dolmeangi_leader{group="/dolmeangi/orders/"}'), 0);
  assert.equal(follower.get('dolmeangi_leader_terms_total{group="/dolmeangi/orders/"}'), 0);
  leading = true;
  terms = 3;
  const m = parseMetrics(await metrics.render());
  assert.equal(m.get('dolmeangi_leader{group="/dolmeangi/orders/"}'), 1);
  assert.equal(m.get('dolmeangi_leader_terms_total{group="/dolmeangi/orders/"}'), 3);
  assert.equal(m.get('dolmeangi_build_info{version="9.9.9",mode="group"}'), 1);
});

test('the process metrics are collected once per process: nodes started and stopped in one process leave no monitors behind', async () => {
  // prom-client starts an event-loop-delay monitor (and a GC observer) each time it collects them, and never stops them.
  const real = perfHooks.monitorEventLoopDelay;
  let monitors = 0;
  perfHooks.monitorEventLoopDelay = ((...args: Parameters<typeof real>) => (monitors++, real(...args))) as typeof real;
  let nodes: Metrics[];
  try {
    nodes = Array.from({ length: 5 }, () => new Metrics(view([])));
  } finally {
    perfHooks.monitorEventLoopDelay = real;
  }
  assert.ok(monitors <= 1, `${monitors} monitors for 5 nodes`);
  for (const node of nodes) {
    const m = parseMetrics(await node.render());
    assert.ok(m.has('process_cpu_user_seconds_total') && m.has('nodejs_eventloop_lag_seconds'), 'each scrape still shows them');
    assert.ok(m.has('dolmeangi_ready'));
  }
});
