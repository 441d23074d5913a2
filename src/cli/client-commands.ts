/**
 * `dolmeangi getseq | current | info | ping`: one request to a server, the
 * answer on stdout, made for scripts.
 *
 * Output: getseq and current print one number and a newline; `getseq --count n`
 * takes a batch and prints only its first number (the caller owns
 * first .. first+n-1); info prints the INFO text with LF line ends; ping
 * prints PONG. Exit codes: 0 ok, 1 no server answered or the server returned
 * an error, 2 bad usage. Errors are one line on stderr, `dolmeangi: ...`.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_PORT, parseAddress } from '../protocol/address.js';
import { SequencerClient, type SequencerClientOptions } from '../client/client.js';
import { ConnectionClosedError, NoServerAvailableError, NotLeaderError, TimeoutError } from '../client/errors.js';
import { MAX_VALUE, invalidNameMessage, isValidName, parseUnsigned } from '../core/limits.js';

export type ClientCommand = 'getseq' | 'current' | 'info' | 'ping';

export interface CommandIo {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  readonly env: NodeJS.ProcessEnv;
}

const DEFAULT_SERVER = `127.0.0.1:${DEFAULT_PORT}`;
const DEFAULT_TIMEOUT_MS = 5000;

const SYNOPSIS: Record<ClientCommand, string> = {
  getseq: 'getseq [name] [--count n]   print the next number (with --count, the first of n)',
  current: 'current [name]              print the number the next getseq returns',
  info: 'info                        print the server\'s INFO',
  ping: 'ping                        print PONG when a server answers',
};

const OPTIONS_HELP = `Options:
  --server host:port[,host:port...]  servers to try in order (env SEQUENCER_SERVER; default ${DEFAULT_SERVER})
  --password <secret>                sent with AUTH (env SEQUENCER_PASSWORD)
  --timeout <ms>                     for the whole command, every server tried included; servers are
                                     asked in order, each with an equal share of what is left (default ${DEFAULT_TIMEOUT_MS})
  --tls                              connect with TLS
  --tls-ca <path>                    PEM CA bundle to trust (implies --tls)
  --tls-cert <path>, --tls-key <path>  client certificate and key, for a server with --tls-ca (imply --tls)`;

const OPTIONS = {
  server: { type: 'string' },
  password: { type: 'string' },
  timeout: { type: 'string' },
  tls: { type: 'boolean' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  count: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

class UsageError extends Error {}

/** The client options a command line gives: always its servers and one timeout for the command. */
type CommandOptions = SequencerClientOptions & { readonly servers: readonly string[]; readonly requestTimeoutMs: number };

export async function runClientCommand(command: ClientCommand, argv: string[], io: CommandIo): Promise<number> {
  let request: { options: CommandOptions; name: string | undefined; count: bigint | undefined; help: boolean };
  try {
    request = parseCommandLine(command, argv, io.env);
  } catch (err) {
    if (!(err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS'))) throw err;
    io.err(`dolmeangi: ${oneLine((err as Error).message)} (see: dolmeangi ${command} --help)\n`);
    return 2;
  }
  if (request.help) {
    io.out(`Usage: dolmeangi ${SYNOPSIS[command]}\n\n${OPTIONS_HELP}\n`);
    return 0;
  }

  try {
    io.out(await eachServer(request.options, command, (client) => perform(client, command, request.name, request.count)));
    return 0;
  } catch (err) {
    io.err(`dolmeangi: ${forCommandLine(oneLine(err instanceof Error ? err.message : String(err)))}\n`);
    return 1;
  }
}

/** The library's advice names its own options; here the one for more time is --timeout, and there is no other. */
export function forCommandLine(message: string): string {
  return message
    .replace(/\((requestTimeoutMs|connectTimeoutMs)\)/g, '(--timeout)')
    .replace(/raise (requestTimeoutMs|connectTimeoutMs)/g, 'raise --timeout')
    .replace(/,? or raise maxRedirects/g, '');
}

/**
 * Asks the listed servers one after another, within one --timeout for all. A
 * server that cannot be reached, or that failed a command which changes
 * nothing (current, info, ping: it may be paused or hung), leaves the rest of
 * the time to the next; each gets an equal share of what is left, so quick
 * failures give theirs on. A getseq whose request may have reached a server is
 * never sent again (it may have taken a number), as in the library.
 */
async function eachServer(
  options: CommandOptions,
  command: ClientCommand,
  ask: (client: SequencerClient) => Promise<string>,
): Promise<string> {
  const deadline = performance.now() + options.requestTimeoutMs;
  let lastError: unknown = null;
  for (let i = 0; i < options.servers.length; i++) {
    const left = Math.floor(deadline - performance.now());
    if (left < 1) break;
    const share = Math.max(1, Math.floor(left / (options.servers.length - i)));
    const last = i === options.servers.length - 1;
    const client = new SequencerClient({
      ...options,
      servers: [options.servers[i]!],
      connectTimeoutMs: share,
      // A follower answering NOTLEADER while no leader is known would otherwise keep a call all the time.
      requestTimeoutMs: last ? left : share,
    });
    try {
      return await ask(client);
    } catch (err) {
      lastError = err;
      // NOTLEADER: that server issued nothing, and the next may lead or know who does.
      const nothingSent =
        err instanceof NoServerAvailableError || err instanceof NotLeaderError || (err instanceof ConnectionClosedError && !err.requestSent);
      const changesNothing = command !== 'getseq' && (err instanceof TimeoutError || err instanceof ConnectionClosedError);
      if (!nothingSent && !changesNothing) throw err;
    } finally {
      await client.close();
    }
  }
  throw lastError ?? new NoServerAvailableError(`no time left to try ${options.servers.join(', ')}`);
}

async function perform(client: SequencerClient, command: ClientCommand, name: string | undefined, count: bigint | undefined): Promise<string> {
  switch (command) {
    case 'getseq':
      return `${count === undefined ? await client.getNextSequence(name) : (await client.getBatch(count, name)).first}\n`;
    case 'current':
      return `${await client.current(name)}\n`;
    case 'info': {
      const text = (await client.info()).raw.replace(/\r\n/g, '\n');
      return text.endsWith('\n') ? text : `${text}\n`;
    }
    case 'ping':
      await client.ping();
      return 'PONG\n';
  }
}

function parseCommandLine(command: ClientCommand, argv: string[], env: NodeJS.ProcessEnv) {
  const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  const takesName = command === 'getseq' || command === 'current';
  if (positionals.length > (takesName ? 1 : 0)) {
    throw new UsageError(`unexpected argument '${positionals[takesName ? 1 : 0]}'`);
  }
  if (values.count !== undefined && command !== 'getseq') throw new UsageError('--count applies to getseq only');
  const name = positionals[0];
  if (name !== undefined && !isValidName(name)) throw new UsageError(invalidNameMessage(name));

  const serverList = values.server ?? (env.SEQUENCER_SERVER || DEFAULT_SERVER);
  const servers = serverList.split(',').map((s) => s.trim());
  const bad = servers.find((s) => parseAddress(s) === null);
  if (bad !== undefined) throw new UsageError(`--server: '${bad}' is not host:port`);

  const timeout = values.timeout === undefined ? DEFAULT_TIMEOUT_MS : Number(parseUnsigned(values.timeout) ?? 0);
  if (timeout < 1 || timeout > 3_600_000) throw new UsageError('--timeout takes milliseconds, 1 to 3600000');

  let count: bigint | undefined;
  if (values.count !== undefined) {
    count = parseUnsigned(values.count);
    if (count === undefined || count < 1n || count > MAX_VALUE) {
      throw new UsageError(`--count takes a whole number from 1 to ${MAX_VALUE}`);
    }
  }

  const ca = readOption('--tls-ca', values['tls-ca']);
  const cert = readOption('--tls-cert', values['tls-cert']);
  const key = readOption('--tls-key', values['tls-key']);
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  const tlsFiles = { ...(ca === undefined ? {} : { ca }), ...(cert === undefined ? {} : { cert, key }) };

  const password = values.password ?? (env.SEQUENCER_PASSWORD || undefined);
  const options: CommandOptions = {
    servers,
    password,
    tls: Object.keys(tlsFiles).length > 0 ? tlsFiles : values.tls === true ? true : undefined,
    // eachServer() shares the time out over the servers.
    connectTimeoutMs: timeout,
    requestTimeoutMs: timeout,
    // A command-line user wants to hear at once that nothing answers.
    reconnect: false,
  };
  return { options, name, count, help: values.help === true };
}

function readOption(option: string, path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`${option}: cannot read ${path}: ${(err as Error).message}`);
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ');
}
