/**
 * Server options: one table drives parsing, validation, environment variables
 * and --help. Flags win over environment variables (SEQUENCER_<NAME>). No I/O
 * here except reading the given argv/env; the result is frozen.
 */
import { parseArgs } from 'node:util';
import { isIP } from 'node:net';
import { ConfigError } from './errors.js';
import { MAX_TIMER_MS, MAX_VALUE } from './core/limits.js';
import { parseAddress } from './protocol/address.js';

export interface Config {
  readonly initial: bigint;
  readonly port: number;
  readonly host: string;
  readonly maxConnections: number;
  readonly dataDir: string;
  readonly inMemory: boolean;
  readonly reserve: bigint;
  readonly maxBatch: bigint;
  readonly maxSequences: number;
  readonly metricsPort: number;
  readonly requirepass: string | null;
  readonly requirepassFile: string | null;
  readonly tlsPort: number | null;
  readonly tlsCert: string | null;
  readonly tlsKey: string | null;
  readonly tlsCa: string | null;
  /** Seconds a connection may stay idle; 0 = forever. */
  readonly timeout: number;
  /** Bytes of unsent replies a client may leave unread before it is disconnected. */
  readonly clientOutputLimit: number;
  readonly logLevel: string;
  readonly etcd: readonly string[];
  readonly nodeId: string | null;
  readonly advertise: string | null;
  /** What NOTLEADER names on the TLS port while this member leads (null: derived in group mode, see run.ts). */
  readonly advertiseTls: string | null;
  /** Seconds. */
  readonly leaseTtl: number;
  readonly etcdPrefix: string;
  readonly etcdUsername: string | null;
  readonly etcdPassword: string | null;
  /** Where each option given was read from (`--name`, or its environment variable), for messages that name it. */
  readonly sources: Readonly<Partial<Record<keyof Config, string>>>;
}

type Kind = 'bigint' | 'int' | 'string' | 'flag' | 'list' | 'level';

interface OptionSpec {
  readonly name: string;
  readonly key: keyof Config;
  readonly kind: Kind;
  readonly def: string | null;
  readonly min?: bigint;
  readonly max?: bigint;
  readonly help: string;
  /** Where the value shows in --help, e.g. `<n>`. */
  readonly arg?: string;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const OPTIONS: readonly OptionSpec[] = [
  { name: 'initial', key: 'initial', kind: 'bigint', def: '1', min: 0n, max: MAX_VALUE, arg: '<n>', help: 'first number of a new sequence (0 .. 2^63-1)' },
  { name: 'port', key: 'port', kind: 'int', def: '10001', min: 0n, max: 65535n, arg: '<n>', help: 'TCP port (0 picks a free one)' },
  { name: 'host', key: 'host', kind: 'string', def: '0.0.0.0', arg: '<addr>', help: 'bind address, also for the metrics port' },
  { name: 'max-connections', key: 'maxConnections', kind: 'int', def: '1000', min: 1n, max: 1_000_000n, arg: '<n>', help: 'concurrent client connections' },
  { name: 'data-dir', key: 'dataDir', kind: 'string', def: './data', arg: '<path>', help: 'where durable state lives' },
  { name: 'in-memory', key: 'inMemory', kind: 'flag', def: null, help: 'keep state in memory only: no files, numbers restart at --initial' },
  { name: 'reserve', key: 'reserve', kind: 'bigint', def: '100000000', min: 0n, max: 1_000_000_000n, arg: '<n>', help: 'ceiling of the reservation window, which adapts to each sequence\'s traffic (1000 up to this): the most numbers a crash can skip, besides those of requests it cuts off; 0 = gapless, every reply waits for fsync' },
  { name: 'max-batch', key: 'maxBatch', kind: 'bigint', def: '1000000', min: 1n, max: 1_000_000_000n, arg: '<n>', help: 'largest GETSEQ_BATCH count' },
  { name: 'max-sequences', key: 'maxSequences', kind: 'int', def: '10000', min: 1n, max: 1_000_000n, arg: '<n>', help: 'how many named sequences may exist' },
  { name: 'metrics-port', key: 'metricsPort', kind: 'int', def: '10090', min: 0n, max: 65535n, arg: '<n>', help: 'HTTP /metrics, /healthz, /readyz; 0 turns it off' },
  { name: 'requirepass', key: 'requirepass', kind: 'string', def: null, arg: '<secret>', help: 'clients must AUTH with this password' },
  { name: 'requirepass-file', key: 'requirepassFile', kind: 'string', def: null, arg: '<path>', help: 'read the password from this file (keeps it out of ps)' },
  { name: 'tls-port', key: 'tlsPort', kind: 'int', def: null, min: 0n, max: 65535n, arg: '<n>', help: 'also serve TLS on this port (needs --tls-cert and --tls-key)' },
  { name: 'tls-cert', key: 'tlsCert', kind: 'string', def: null, arg: '<path>', help: 'PEM certificate chain for TLS' },
  { name: 'tls-key', key: 'tlsKey', kind: 'string', def: null, arg: '<path>', help: 'PEM private key for TLS' },
  { name: 'tls-ca', key: 'tlsCa', kind: 'string', def: null, arg: '<path>', help: 'PEM CA bundle: TLS clients must present a certificate it signed' },
  { name: 'timeout', key: 'timeout', kind: 'int', def: '300', min: 0n, max: BigInt(Math.floor(MAX_TIMER_MS / 1000)), arg: '<seconds>', help: 'close connections idle this long; 0 = never' },
  { name: 'client-output-limit', key: 'clientOutputLimit', kind: 'int', def: '8388608', min: 65536n, max: 1n << 32n, arg: '<bytes>', help: 'serve a client nothing more while this many reply bytes are owed to it, until it reads them' },
  { name: 'log-level', key: 'logLevel', kind: 'level', def: 'info', arg: '<level>', help: `log level: ${LEVELS.join(', ')}` },
  { name: 'etcd', key: 'etcd', kind: 'list', def: null, arg: '<url,...>', help: 'run as a member of a group on these etcd endpoints' },
  { name: 'node-id', key: 'nodeId', kind: 'string', def: null, arg: '<id>', help: 'this member\'s name in the group (default: advertise address)' },
  { name: 'advertise', key: 'advertise', kind: 'string', def: null, arg: '<host:port>', help: 'address clients are redirected to when this member leads' },
  { name: 'advertise-tls', key: 'advertiseTls', kind: 'string', def: null, arg: '<host:port>', help: 'address TLS clients are redirected to when this member leads (default: the --advertise host and --tls-port)' },
  { name: 'lease-ttl', key: 'leaseTtl', kind: 'int', def: '2', min: 1n, max: 600n, arg: '<seconds>', help: 'leader lease in etcd; a dead leader is replaced after about this long' },
  { name: 'etcd-prefix', key: 'etcdPrefix', kind: 'string', def: '/dolmeangi/default/', arg: '<prefix>', help: 'key prefix in etcd, so several groups can share one etcd' },
  { name: 'etcd-username', key: 'etcdUsername', kind: 'string', def: null, arg: '<user>', help: 'etcd user' },
  { name: 'etcd-password', key: 'etcdPassword', kind: 'string', def: null, arg: '<secret>', help: 'etcd password' },
];

export const envName = (option: string): string => `SEQUENCER_${option.toUpperCase().replace(/-/g, '_')}`;

/**
 * Parses `sequencer` options. Throws ConfigError naming the option and what it
 * accepts; the CLI prints that one line and exits 2.
 */
export function parseConfig(argv: readonly string[], env: NodeJS.ProcessEnv = {}): Config {
  const parseOptions: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const o of OPTIONS) parseOptions[o.name] = { type: o.kind === 'flag' ? 'boolean' : 'string' };
  let values: Record<string, string | boolean | undefined>;
  try {
    const parsed = parseArgs({ args: [...argv], options: parseOptions, strict: true, allowPositionals: false });
    values = parsed.values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw fromParseArgs(err, argv);
  }
  const out: Record<string, unknown> = {};
  const sources: Partial<Record<keyof Config, string>> = {};
  for (const o of OPTIONS) {
    let raw: string | boolean | undefined = values[o.name];
    let source = `--${o.name}`;
    if (raw === undefined && env[envName(o.name)] !== undefined) {
      raw = env[envName(o.name)];
      source = envName(o.name);
      if (o.kind === 'flag') raw = parseFlag(source, raw as string);
    }
    if (raw !== undefined) sources[o.key] = source;
    if (raw === undefined) raw = o.kind === 'flag' ? false : (o.def ?? undefined);
    out[o.key] = raw === undefined ? (o.kind === 'list' ? [] : null) : convert(o, source, raw);
  }
  out.sources = Object.freeze(sources);
  const config = out as unknown as Config;
  crossCheck(config);
  return Object.freeze(config);
}

function convert(o: OptionSpec, source: string, raw: string | boolean): unknown {
  if (o.kind === 'flag') return raw === true;
  const text = String(raw);
  switch (o.kind) {
    case 'bigint':
    case 'int': {
      const range = `an integer from ${o.min} to ${o.max}`;
      if (!/^[0-9]{1,20}$/.test(text)) throw new ConfigError(source, `expected ${range}, got '${text}'`);
      const v = BigInt(text);
      if ((o.min !== undefined && v < o.min) || (o.max !== undefined && v > o.max)) {
        throw new ConfigError(source, `expected ${range}, got '${text}'`);
      }
      return o.kind === 'int' ? Number(v) : v;
    }
    case 'level':
      if (!LEVELS.includes(text)) throw new ConfigError(source, `expected one of ${LEVELS.join(', ')}, got '${text}'`);
      return text;
    case 'list': {
      const items = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
      if (items.length === 0) throw new ConfigError(source, 'expected a comma-separated list of URLs');
      for (const item of items) {
        // Not echoed: the part before '@' may be a password, and this message is printed.
        if (/^https?:\/\/[^/]*@/.test(item)) {
          throw new ConfigError(source, 'credentials do not go in the URL: give them with --etcd-username and --etcd-password (or SEQUENCER_ETCD_PASSWORD)');
        }
        if (!/^https?:\/\/[^\s/]+(:\d+)?\/?$/.test(item)) {
          throw new ConfigError(source, `expected URLs like http://127.0.0.1:2379, got '${item}'`);
        }
      }
      return items;
    }
    case 'string':
      if (text === '') throw new ConfigError(source, 'expected a non-empty value');
      return text;
  }
}

function parseFlag(source: string, text: string): boolean {
  if (/^(1|true|yes|on)$/i.test(text)) return true;
  if (/^(0|false|no|off|)$/i.test(text)) return false;
  throw new ConfigError(source, `expected true or false, got '${text}'`);
}

/**
 * An IP address or a host name (RFC 1123 labels, the last not all digits). A
 * malformed one, such as `999.1.1.1`, would only fail at bind time, as a
 * failed name lookup.
 */
function isBindHost(host: string): boolean {
  if (isIP(host) !== 0) return true;
  const label = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
  const labels = host.endsWith('.') ? host.slice(0, -1).split('.') : host.split('.');
  return host.length <= 253 && labels.every((l) => label.test(l)) && !/^\d+$/.test(labels[labels.length - 1]!);
}

function crossCheck(c: Config): void {
  // Messages name what the user gave: the flag, or the environment variable it came from.
  const src = (key: keyof Config, flag: string): string => c.sources[key] ?? flag;
  if (!isBindHost(c.host)) {
    throw new ConfigError(src('host', '--host'), `expected an IP address or a host name, got '${c.host}'`);
  }
  if (c.tlsPort !== null && (c.tlsCert === null || c.tlsKey === null)) {
    throw new ConfigError(src('tlsPort', '--tls-port'), 'needs --tls-cert and --tls-key');
  }
  if ((c.tlsCert !== null || c.tlsKey !== null || c.tlsCa !== null) && c.tlsPort === null) {
    const given = c.tlsCert !== null ? src('tlsCert', '--tls-cert') : c.tlsKey !== null ? src('tlsKey', '--tls-key') : src('tlsCa', '--tls-ca');
    throw new ConfigError(given, 'TLS files were given without --tls-port');
  }
  if (c.requirepass !== null && c.requirepassFile !== null) {
    throw new ConfigError(c.sources.requirepassFile!, `give either ${c.sources.requirepass} or ${c.sources.requirepassFile}, not both`);
  }
  // Each may come from a flag or from the environment; neither can win over the other.
  if (c.inMemory && c.sources.dataDir !== undefined) {
    throw new ConfigError(c.sources.dataDir, `cannot be combined with ${c.sources.inMemory} (in memory, nothing is stored); give one of them`);
  }
  // What clients parse a NOTLEADER address with; the port must be given, not defaulted.
  if (c.advertise !== null && parseAddress(c.advertise, null) === null) {
    throw new ConfigError(src('advertise', '--advertise'), `expected host:port or [ipv6]:port, got '${c.advertise}'`);
  }
  if (c.advertiseTls !== null && parseAddress(c.advertiseTls, null) === null) {
    throw new ConfigError(src('advertiseTls', '--advertise-tls'), `expected host:port or [ipv6]:port, got '${c.advertiseTls}'`);
  }
  if (c.advertiseTls !== null && c.tlsPort === null) {
    throw new ConfigError(src('advertiseTls', '--advertise-tls'), 'names the TLS port of this member, and there is none: give --tls-port too');
  }
  if (c.etcd.length > 0 && c.inMemory) {
    throw new ConfigError(c.sources.inMemory!, `cannot be combined with ${c.sources.etcd} (a group keeps its state in etcd)`);
  }
  // Ignoring it would be worse than refusing: a node turned into a group by adding --etcd
  // would start its sequences over from --initial, below numbers its data directory handed out.
  if (c.etcd.length > 0 && c.sources.dataDir !== undefined) {
    throw new ConfigError(
      c.sources.dataDir,
      `is not used with ${c.sources.etcd} (a group keeps its state in etcd): remove it, and carry the directory's ` +
        "sequences into etcd first as docs/cluster.md says under 'Moving a single node into a group'",
    );
  }
  if (!c.etcdPrefix.endsWith('/')) {
    throw new ConfigError(src('etcdPrefix', '--etcd-prefix'), `must end with '/', got '${c.etcdPrefix}'`);
  }
}

function fromParseArgs(err: unknown, argv: readonly string[]): ConfigError {
  const e = err as { code?: string; message?: string };
  const m = /'(-[^']*)'/.exec(e.message ?? '');
  const opt = m?.[1] ?? 'option';
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return new ConfigError(opt, 'unknown option; see --help for every option');
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const flag = /--([a-z-]+)/.exec(e.message ?? '')?.[1];
      const spec = OPTIONS.find((o) => o.name === flag);
      if (spec?.kind === 'flag') return new ConfigError(`--${flag}`, 'takes no value');
      // `--port -1`: the value was given, but after a space a leading dash reads as the next
      // option. (`--port --in-memory` is "ambiguous" to the parser too: a value is missing there.)
      const next = argv[argv.indexOf(`--${flag}`) + 1] ?? '';
      if (/ambiguous/.test(e.message ?? '') && !next.startsWith('--')) {
        return new ConfigError(`--${flag ?? '?'}`, `a value that begins with '-' goes after '=': --${flag}=${next}`);
      }
      return new ConfigError(`--${flag ?? '?'}`, `expected a value: --${flag}=${spec?.arg ?? '<value>'}`);
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': {
      const word = /'([^']*)'/.exec(e.message ?? '')?.[1];
      return new ConfigError(
        word === undefined ? 'arguments' : `'${word}'`,
        'unexpected argument; options look like --name=value, and flags such as --in-memory take no value',
      );
    }
    default:
      return new ConfigError('arguments', String(e.message ?? err).split('\n')[0]!);
  }
}

/** The --help text: every option, its default and its environment variable. */
export function helpText(): string {
  const lines = ['Usage: dolmeangi sequencer [options]', '', 'Options (each also read from SEQUENCER_<NAME>; flags win):'];
  for (const o of OPTIONS) {
    const flag = `--${o.name}${o.arg ? `=${o.arg}` : ''}`;
    const def = o.def !== null ? ` (default ${o.def})` : '';
    lines.push(`  ${flag.padEnd(30)} ${o.help}${def}  [${envName(o.name)}]`);
  }
  lines.push(`  ${'--help'.padEnd(30)} show this help`, `  ${'--version'.padEnd(30)} print the version`);
  return lines.join('\n');
}
