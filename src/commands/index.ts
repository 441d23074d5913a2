/**
 * The command table: frame (words) to command to reply. Pure: everything a
 * command needs comes in through Session and Services.
 */
import type { Command, Reply, Services, Session } from './types.js';
import { getseq } from './getseq.js';
import { current } from './current.js';
import { batch } from './batch.js';
import { ping } from './ping.js';
import { info } from './info.js';
import { auth } from './auth.js';
import { quit } from './quit.js';
import { echo } from './echo.js';
import { select } from './select.js';
import { client } from './client.js';
import { discard, exec, multi, refusedInTransaction } from './transaction.js';
import { clip, error } from '../protocol/encoder.js';

export type { Command, Reply, Services, Session } from './types.js';

/** In the order the unknown-command error lists them (new ones last: the order indexes CommandStats.calls). */
export const COMMANDS: readonly Command[] = [getseq, current, batch, ping, info, auth, quit, echo, select, client, multi, exec, discard];

/** Lower-case command names plus `unknown`, indexed as CommandStats.calls: for INFO and the metrics. */
export const COMMAND_LABELS: readonly string[] = [...COMMANDS.map((c) => c.name.toLowerCase()), 'unknown'];

const SUPPORTED = COMMANDS.filter((c) => c.unlisted !== true)
  .map((c) => c.name)
  .join(', ');
const NOAUTH = error('NOAUTH', 'Authentication required.');

/** Counters read at scrape time; plain numbers keep the hot path free of label lookups. */
export class CommandStats {
  /** Calls by command index in COMMANDS; the last slot counts unknown commands. */
  readonly calls = new Array<number>(COMMANDS.length + 1).fill(0);
  /** Error replies by wire code (ERR, NOAUTH, NOTLEADER, ...). */
  readonly errors = new Map<string, number>();

  countError(reply: string): void {
    const space = reply.indexOf(' ');
    const code = reply.slice(1, space === -1 ? reply.length - 2 : space);
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }
}

interface Entry {
  readonly command: Command;
  readonly index: number;
}

const ENTRIES: readonly Entry[] = COMMANDS.map((command, index) => ({ command, index }));
const table = new Map<string, Entry>();
for (const entry of ENTRIES) {
  table.set(entry.command.name, entry);
  table.set(entry.command.name.toLowerCase(), entry);
}

/** `gone`: whether the connection can still carry a reply (see Session.gone). */
export function newSession(gone: () => boolean = () => false, tls = false): Session {
  return {
    authenticated: false,
    quit: false,
    last: null,
    tls,
    name: null,
    transaction: null,
    get gone() {
      return gone();
    },
  };
}

function lookup(name: string, session: Session): Entry | undefined {
  const last = session.last;
  if (last !== null && last.name === name) return ENTRIES[last.index];
  const entry = table.get(name) ?? table.get(name.toUpperCase());
  if (entry !== undefined) session.last = { name, index: entry.index };
  return entry;
}

export function execute(words: string[], session: Session, services: Services, stats: CommandStats): Reply {
  const name = words[0]!;
  const entry = lookup(name, session);
  const locked = services.passwordDigest !== null && !session.authenticated;
  let reply: Reply;
  if (entry === undefined) {
    stats.calls[COMMANDS.length]!++;
    // Before AUTH an unknown command is refused like any other, so the command set
    // cannot be probed; but HELLO, the first thing a Redis 6 client may send (ioredis
    // sends HELLO 3 AUTH default <password>), must be told it is unknown, without the
    // list: that is how such a client knows to fall back to AUTH, where NOAUTH fails it.
    if (!locked) reply = unknown(name);
    else reply = name.length === 5 && name.toUpperCase() === 'HELLO' ? error('ERR', `Unknown command '${name}'. Authenticate with AUTH`) : NOAUTH;
    if (session.transaction !== null) session.transaction = 'aborted';
  } else {
    stats.calls[entry.index]!++;
    const { command } = entry;
    const argc = words.length - 1;
    if (session.transaction !== null && command.inTransaction !== true) {
      session.transaction = 'aborted';
      reply = refusedInTransaction(command.name);
    } else if (locked && command.beforeAuth !== true) {
      reply = NOAUTH;
    } else if (argc < command.minArgs || argc > command.maxArgs) {
      reply = error('ERR', `wrong number of arguments for '${command.name}'`);
      // As Redis: a transaction command that could not be taken fails the transaction.
      if (session.transaction !== null) session.transaction = 'aborted';
    } else {
      reply = command.run(words, session, services);
    }
  }
  // Replies that wait for storage are counted by the connection when they arrive.
  if (typeof reply === 'string' && reply.charCodeAt(0) === 45 /* '-' */) stats.countError(reply);
  return reply;
}

/** During a clean stop, whether a request is refused unexecuted: all but the commands that run while stopping (QUIT). */
export function refusedWhileStopping(words: string[], session: Session): boolean {
  return lookup(words[0]!, session)?.command.whileStopping !== true;
}

function unknown(name: string): string {
  // The name is echoed as sent (cut to a sane length), never as raw control bytes.
  // error() makes the name safe for one line.
  return error('ERR', `Unknown command '${clip(name, 128)}'. Supported: ${SUPPORTED}`);
}
