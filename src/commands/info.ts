import type { Command } from './types.js';
import { bulk } from '../protocol/encoder.js';

/** INFO [section]: the section is accepted for Redis clients' sake; all facts are always sent. */
export const info: Command = {
  name: 'INFO',
  minArgs: 0,
  maxArgs: 1,
  run(_args, _session, services) {
    // bulk() takes one character per byte: paths and error reasons may hold any UTF-8.
    return bulk(Buffer.from(services.info(), 'utf8').toString('latin1'));
  },
};
