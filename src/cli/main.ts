#!/usr/bin/env node
/**
 * `dolmeangi <command>`: thin dispatch to the server, the client commands and the bench.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage (nothing started).
 */
import { parseConfig, helpText } from '../config.js';
import { DolmeangiError } from '../errors.js';
import { VERSION } from '../version.js';

// A stop asked for while the server starts must still end in a clean stop, not
// in the default abrupt exit. So the handlers go in first, before the server's
// modules load (tens of milliseconds), and only for the server: a client command
// stays one Ctrl-C can end.
let signalled: NodeJS.Signals | null = null;
let onSignal: (signal: NodeJS.Signals) => void = (signal) => {
  signalled = signal;
};
if (process.argv[2] === 'sequencer') {
  const handler = (signal: NodeJS.Signals) => onSignal(signal);
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

const USAGE = `Usage: dolmeangi <command> [options]

Commands:
  sequencer [options]        run the server (see: dolmeangi sequencer --help)
  getseq [name] [--count n]  print the next number (with --count, the first of a batch)
  current [name]             print the number the next getseq returns
  info                       print the server's INFO
  ping                       check that a server answers
  bench [options]            benchmark servers (see: dolmeangi bench --help)

Client commands take --server host:port[,host:port...] (or SEQUENCER_SERVER).`;

function fail(message: string, code: number): number {
  process.stderr.write(`dolmeangi: ${message.split('\n')[0]}\n`);
  return code;
}

async function runSequencer(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(helpText() + '\n');
    return 0;
  }
  if (argv.includes('--version')) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  let config;
  try {
    config = parseConfig(argv, process.env);
  } catch (err) {
    if (err instanceof DolmeangiError) return fail(err.message, 2);
    throw err;
  }
  const [{ createLogger }, { startServer }] = await Promise.all([import('../log.js'), import('../server/run.js')]);
  const log = createLogger(config.logLevel);
  let server;
  try {
    server = await startServer(config, { log });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const badOption = err instanceof DolmeangiError && err.code === 'CONFIG';
    // A bad option gets its one line on stderr, as when parsing the command line.
    if (!badOption) log.fatal({ err: message }, 'cannot start');
    return fail(message, badOption ? 2 : 1);
  }
  const running = server;
  return new Promise<number>((resolve) => {
    let stopping = false;
    onSignal = (signal) => {
      if (stopping) {
        // Only the drain of slow clients is cut short once the exact marks are stored:
        // the next start has no gap, and whoever watches the exit status need not worry.
        if (running.exactStored()) {
          log.warn({ signal }, 'second signal: exiting without waiting for clients; the exact next numbers are stored');
          resolve(0);
        } else {
          log.warn({ signal }, 'second signal: exiting without waiting; the exact next numbers are not stored, the next start skips the rest of the reserved windows');
          resolve(1);
        }
        return;
      }
      stopping = true;
      log.info({ signal }, 'signal received');
      // A write hung on a failing disk (or a hard NFS mount) must not keep the
      // process from stopping: the marks on disk are only ever above what was
      // handed out, so leaving without the exact ones costs a gap, never a repeat.
      const limit = setTimeout(() => {
        if (running.exactStored()) {
          log.warn({ afterMs: SHUTDOWN_LIMIT_MS }, 'shutdown did not finish: exiting; the exact next numbers are stored');
          resolve(0);
          return;
        }
        log.error(
          { afterMs: SHUTDOWN_LIMIT_MS },
          'shutdown did not finish (a storage write hangs?): exiting without storing the exact marks; the next start skips the rest of the reserved windows',
        );
        resolve(1);
      }, SHUTDOWN_LIMIT_MS);
      limit.unref();
      running.close().then(
        // Not stored exactly: the next start skips numbers. Say so to whoever watches the exit status.
        (exact) => resolve(exact ? 0 : 1),
        (err: unknown) => {
          log.error({ err: String((err as Error)?.message ?? err) }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    if (signalled !== null) onSignal(signalled);
  });
}

/** Client connections get 5 s to take their replies; the exact marks get the rest. */
const SHUTDOWN_LIMIT_MS = 15_000;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'sequencer':
      return runSequencer(rest);
    case 'getseq':
    case 'current':
    case 'info':
    case 'ping': {
      // `dolmeangi info | head -1`: a reader that stops early is no failure of ours.
      process.stdout.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EPIPE') process.exit(0);
        throw err;
      });
      const { runClientCommand } = await import('./client-commands.js');
      return runClientCommand(command, rest, {
        out: (s) => process.stdout.write(s),
        err: (s) => process.stderr.write(s),
        env: process.env,
      });
    }
    case 'bench': {
      const { runBenchCommand } = await import('./bench-command.js');
      return runBenchCommand(rest);
    }
    case '--version':
    case 'version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      // Asked for, it is the answer; given for a missing command, it is an error.
      (command === undefined ? process.stderr : process.stdout).write(USAGE + '\n');
      return command === undefined ? 2 : 0;
    default:
      return fail(`unknown command '${command}'; commands: sequencer, getseq, current, info, ping, bench`, 2);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Let what client commands wrote to stdout drain, then leave with the code.
    process.exitCode = code;
    setImmediate(() => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(`dolmeangi: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
