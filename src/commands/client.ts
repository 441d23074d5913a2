import type { Command } from './types.js';
import { OK, bulk, clip, error } from '../protocol/encoder.js';

const NIL = '$-1\r\n';
const BAD_NAME = error('ERR', 'Client names cannot contain spaces, newlines or special characters.');
/** Kept per connection for its life: a bound, so that a name cannot cost more than the rest of a connection's bookkeeping. */
const MAX_NAME_BYTES = 256;
const LONG_NAME = error('ERR', `Client names are at most ${MAX_NAME_BYTES} bytes here`);

/**
 * CLIENT SETNAME | GETNAME | SETINFO: what Redis clients send on connect when
 * given a connection name, and library name and version (SETINFO, taken and
 * not kept). The name lasts as long as the connection, for GETNAME.
 */
export const client: Command = {
  name: 'CLIENT',
  minArgs: 1,
  maxArgs: 3,
  // SETINFO's value is counted, never read.
  readsArgs: 2,
  unlisted: true,
  run(words, session) {
    const sub = words[1]!.toUpperCase();
    const argc = words.length - 2;
    switch (sub) {
      case 'SETNAME': {
        if (argc !== 1) return wrongArgs(sub);
        const name = words[2]!;
        // As Redis: printable ASCII but the space.
        if (!/^[\x21-\x7e]*$/.test(name)) return BAD_NAME;
        if (name.length > MAX_NAME_BYTES) return LONG_NAME;
        session.name = name === '' ? null : name;
        return OK;
      }
      case 'GETNAME':
        if (argc !== 0) return wrongArgs(sub);
        return session.name === null ? NIL : bulk(session.name);
      case 'SETINFO':
        return argc === 2 ? OK : wrongArgs(sub);
      default:
        return error('ERR', `unknown subcommand '${clip(words[1]!, 128)}' of CLIENT. Supported: SETNAME, GETNAME, SETINFO`);
    }
  },
};

function wrongArgs(sub: string): string {
  return error('ERR', `wrong number of arguments for 'client|${sub.toLowerCase()}' command`);
}
