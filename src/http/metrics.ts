/**
 * The node's Prometheus metrics, on a registry of its own (never prom-client's
 * global one, so embedders and tests can run several nodes in one process).
 *
 * The request path pays nothing for them: counters that change per request
 * (numbers issued, commands, errors, connections) are plain numbers the server
 * keeps anyway, read here at scrape time. Only events that are rare or per chunk
 * of requests (a store write, a failed AUTH, one socket read) are recorded as
 * they happen.
 *
 * Label cardinality is bounded: the first LABELLED_SEQUENCES sequences (in the
 * order they were created) get their own `sequence` label; the rest share
 * `sequence="(other)"`, a value no sequence can have (names are A-Z a-z 0-9 _ . : -).
 *
 * Sequence values reach 2^63; Prometheus samples are float64, exact only up to
 * 2^53. The gauges of values are therefore approximate above 2^53, which is fine
 * for graphs and alerts; INFO gives the exact numbers.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { COMMAND_LABELS, type CommandStats } from '../commands/index.js';
import type { SequenceSnapshot } from '../core/sequencer.js';
import { END } from '../core/limits.js';
import { CountedHistogram } from './counted-histogram.js';
import { MAX_OPS_CONNECTIONS, MAX_OPS_CONNECTIONS_PER_PEER, MAX_OPS_PIPELINED, STALLED_MS } from './server.js';

export const LABELLED_SEQUENCES = 100;
export const OTHER_SEQUENCES = '(other)';

/** What the metrics read from the node at scrape time. */
export interface NodeView {
  readonly version: string;
  readonly maxConnections: number;
  readonly maxSequences: number;
  mode(): string;
  sequences(): readonly SequenceSnapshot[];
  commands(): CommandStats;
  connections(): { open: number; accepted: number; rejected: number; outputLimitDisconnects: number; acceptErrors: number; certificateRefusals: number };
  ready(): boolean;
  /** False while the store is failing; true when there is no store to fail. */
  persistenceUp(): boolean;
  /**
   * Group mode only (absent otherwise, and so are the leader metrics): the group's --etcd-prefix,
   * whether this member leads it, and how many terms it has served as leader since it started.
   */
  group?: { readonly prefix: string; leading(): boolean; termsServed(): number };
}

export interface MetricsOptions {
  /** How many sequences get a label of their own; default LABELLED_SEQUENCES. */
  labelledSequences?: number;
}

/** One scrape's view of the sequences, already folded to bounded labels. */
interface SequenceRow {
  readonly sequence: string;
  readonly issued: number;
  /** null for the `(other)` row: a sum or maximum of those would mean nothing. */
  readonly next: bigint | null;
  readonly durableMark: bigint | null;
  /** For `(other)`, the fullest of the rest, so the exhaustion alert still sees them. */
  readonly remaining: bigint;
}

/** Size of the number space, as a float for ratios. */
const SPACE = Number(END);

/**
 * The process_* and nodejs_* metrics, on one registry for the process. Collecting
 * them starts a GC observer and an event-loop-delay monitor that prom-client never
 * stops, so each node would leave its own behind when closed; and they describe
 * the process, which every node in it shares.
 */
let processRegistry: Registry | null = null;

function processMetrics(): Registry {
  if (processRegistry === null) {
    processRegistry = new Registry();
    // Standard names (process_*, nodejs_*), so stock Node.js dashboards work unchanged.
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export class Metrics {
  private readonly registry = new Registry();
  /** This node's metrics and the process's, as one scrape shows them. */
  private readonly exposed: Registry;
  private readonly labelled: number;
  /** Taken by render() for the collect callbacks of that scrape, which all run before its first await. */
  private rows: SequenceRow[] = [];
  private sequenceCount = 0;
  private readonly persistDuration: Histogram;
  private readonly persistFailures: Counter;
  private readonly authFailures: Counter;
  private readonly opsRefusals: Counter;
  private readonly chunkDuration: CountedHistogram;

  constructor(
    private readonly view: NodeView,
    opts: MetricsOptions = {},
  ) {
    this.labelled = opts.labelledSequences ?? LABELLED_SEQUENCES;
    const registers = [this.registry];

    scraped(Counter, registers, 'dolmeangi_issued_numbers_total', 'Numbers handed out since this process started (a batch of 100 counts 100).', ['sequence'], (c) => {
      for (const r of this.rows) c.inc({ sequence: r.sequence }, r.issued);
    });
    scraped(Gauge, registers, 'dolmeangi_sequence_next', 'The number the next GETSEQ returns (2^63 once exhausted); float64, approximate above 2^53.', ['sequence'], (g) => {
      for (const r of this.rows) if (r.next !== null) g.set({ sequence: r.sequence }, Number(r.next));
    });
    scraped(Gauge, registers, 'dolmeangi_sequence_durable_mark', 'Numbers below this are durable and handed out without waiting for storage (2^63 in memory mode); float64, approximate above 2^53.', ['sequence'], (g) => {
      for (const r of this.rows) if (r.durableMark !== null) g.set({ sequence: r.sequence }, Number(r.durableMark));
    });
    scraped(Gauge, registers, 'dolmeangi_sequence_remaining', 'Numbers left before the sequence is exhausted at 2^63-1; exact below 2^53. For (other), the least among them.', ['sequence'], (g) => {
      for (const r of this.rows) g.set({ sequence: r.sequence }, Number(r.remaining));
    });
    scraped(Gauge, registers, 'dolmeangi_sequence_used_ratio', 'Fraction of the 63-bit number space below the next number (1 = exhausted). For (other), the fullest among them.', ['sequence'], (g) => {
      for (const r of this.rows) g.set({ sequence: r.sequence }, (SPACE - Number(r.remaining)) / SPACE);
    });
    scraped(Gauge, registers, 'dolmeangi_sequences', 'Sequences that exist on this node.', [], (g) => g.set(this.sequenceCount));
    scraped(Gauge, registers, 'dolmeangi_max_sequences', 'The --max-sequences limit.', [], (g) => g.set(view.maxSequences));

    scraped(Counter, registers, 'dolmeangi_requests_total', 'Requests by command; unknown commands count under command="unknown".', ['command'], (c) => {
      const calls = view.commands().calls;
      COMMAND_LABELS.forEach((command, i) => c.inc({ command }, calls[i] ?? 0));
    });
    scraped(Counter, registers, 'dolmeangi_errors_total', 'Error replies by wire code (ERR, NOAUTH, WRONGPASS, NOTLEADER, ...).', ['code'], (c) => {
      for (const [code, n] of view.commands().errors) c.inc({ code }, n);
    });

    scraped(Gauge, registers, 'dolmeangi_connections', 'Open client connections.', [], (g) => g.set(view.connections().open));
    scraped(Gauge, registers, 'dolmeangi_max_connections', 'The --max-connections limit.', [], (g) => g.set(view.maxConnections));
    scraped(Counter, registers, 'dolmeangi_connections_accepted_total', 'Client connections accepted.', [], (c) => c.inc(view.connections().accepted));
    scraped(Counter, registers, 'dolmeangi_connections_rejected_total', 'Client connections refused because --max-connections were open.', [], (c) => c.inc(view.connections().rejected));
    scraped(Counter, registers, 'dolmeangi_tls_certificate_refusals_total', 'TLS clients refused by mutual TLS (--tls-ca): no certificate, or one that does not verify against that CA (another CA\'s, expired, ...).', [], (c) => c.inc(view.connections().certificateRefusals));
    scraped(Counter, registers, 'dolmeangi_accept_errors_total', 'Client connections the server failed to accept (ENOMEM, ENOBUFS and the like; not EMFILE or ENFILE, which libuv handles unreported); the server serves on.', [], (c) => c.inc(view.connections().acceptErrors));
    scraped(Counter, registers, 'dolmeangi_output_limit_disconnects_total', 'Clients disconnected for leaving --client-output-limit reply bytes unread while replies released by storage kept coming (otherwise such a client is only paused).', [], (c) => c.inc(view.connections().outputLimitDisconnects));

    scraped(Gauge, registers, 'dolmeangi_ready', '1 when this node can hand out numbers now (as /readyz), else 0.', [], (g) => g.set(view.ready() ? 1 : 0));
    scraped(Gauge, registers, 'dolmeangi_persistence_up', '0 while writes to storage fail, else 1 (also 1 in memory mode, where nothing is written).', [], (g) => g.set(view.persistenceUp() ? 1 : 0));
    const group = view.group;
    if (group !== undefined) {
      // Labelled with the group, so that a rule can sum by it: several groups may share one scrape job.
      scraped(Gauge, registers, 'dolmeangi_leader', '1 while this member leads its group (the --etcd-prefix), else 0 (group mode only).', ['group'], (g) =>
        g.set({ group: group.prefix }, group.leading() ? 1 : 0),
      );
      scraped(
        Counter,
        registers,
        'dolmeangi_leader_terms_total',
        'Terms this member has served as leader of its group (elected, and its marks loaded) since it started; summed over the members, how many new terms the group started (group mode only).',
        ['group'],
        (c) => c.inc({ group: group.prefix }, group.termsServed()),
      );
    }
    scraped(Gauge, registers, 'dolmeangi_build_info', 'Always 1; the labels say which release runs in which mode.', ['version', 'mode'], (g) => {
      g.set({ version: view.version, mode: view.mode() }, 1);
    });

    this.persistDuration = new Histogram({
      name: 'dolmeangi_persist_duration_seconds',
      help: 'Time of one store write (one write covers every sequence and request waiting for it).',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.persistFailures = new Counter({
      name: 'dolmeangi_persist_failures_total',
      help: 'Failed store writes, retries included.',
      registers,
    });
    this.authFailures = new Counter({
      name: 'dolmeangi_auth_failures_total',
      help: 'AUTH attempts with a wrong password.',
      registers,
    });
    this.opsRefusals = new Counter({
      name: 'dolmeangi_ops_connections_refused_total',
      help: `Connections to this operations port closed unanswered: ${MAX_OPS_CONNECTIONS_PER_PEER} from their address, or ${MAX_OPS_CONNECTIONS} in all, were open; or they pipelined over ${MAX_OPS_PIPELINED} requests, or left their replies unread for ${STALLED_MS / 1000} s.`,
      registers,
    });
    // Observed once per socket read, so once per request at -P 1: the cheap kind.
    this.chunkDuration = new CountedHistogram(
      'dolmeangi_request_chunk_duration_seconds',
      'Time to decode, execute and write the replies of one chunk of pipelined requests read from a socket (replies that wait for storage excluded).',
      [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
      this.registry,
    );
    this.exposed = Registry.merge([processMetrics(), this.registry]);
  }

  get contentType(): string {
    return this.exposed.contentType;
  }

  /** The exposition text; takes one snapshot of the sequences for the whole scrape. */
  render(): Promise<string> {
    const snapshot = this.view.sequences();
    this.rows = foldSequences(snapshot, this.labelled);
    this.sequenceCount = snapshot.length;
    return this.exposed.metrics();
  }

  readonly persisted = (ms: number): void => {
    this.persistDuration.observe(ms / 1000);
  };

  readonly persistFailed = (): void => {
    this.persistFailures.inc();
  };

  readonly authFailed = (): void => {
    this.authFailures.inc();
  };

  readonly opsRefused = (): void => {
    this.opsRefusals.inc();
  };

  readonly chunkHandled = (ms: number): void => {
    this.chunkDuration.observe(ms / 1000);
  };
}

/** The first `labelled` sequences as they are, the rest as one `(other)` row. */
function foldSequences(snapshot: readonly SequenceSnapshot[], labelled: number): SequenceRow[] {
  const rows: SequenceRow[] = [];
  let issued = 0;
  let remaining: bigint | null = null;
  for (let i = 0; i < snapshot.length; i++) {
    const s = snapshot[i]!;
    const left = END - s.next;
    if (i < labelled) {
      rows.push({ sequence: s.name, issued: Number(s.issued), next: s.next, durableMark: s.durableMark, remaining: left });
    } else {
      issued += Number(s.issued);
      if (remaining === null || left < remaining) remaining = left;
    }
  }
  if (remaining !== null) rows.push({ sequence: OTHER_SEQUENCES, issued, next: null, durableMark: null, remaining });
  return rows;
}

/** The settings both metric kinds take; `collect` runs at each scrape. */
interface ScrapedConfig<M> {
  name: string;
  help: string;
  labelNames: string[];
  registers: Registry[];
  collect(this: M): void;
}

/**
 * A metric whose value is read at scrape time. prom-client counters only go up
 * by inc(), so each scrape starts from zero and adds the current totals; gauges
 * are reset too, so a sequence gone from the view leaves no stale series.
 */
function scraped<K extends typeof Counter | typeof Gauge>(
  Kind: K,
  registers: Registry[],
  name: string,
  help: string,
  labelNames: string[],
  fill: (m: InstanceType<K>) => void,
): void {
  const config: ScrapedConfig<InstanceType<K>> = {
    name,
    help,
    labelNames,
    registers,
    collect() {
      this.reset();
      fill(this);
    },
  };
  // Both constructors take this config; TypeScript cannot see that through their label-name generics.
  new (Kind as new (c: typeof config) => InstanceType<K>)(config);
}
