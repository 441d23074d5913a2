import type { Command } from './types.js';
import { bulk } from '../protocol/encoder.js';

/** INFO [section]: the section is accepted for Redis clients' sake; all facts are always sent. */
export const info: Command = {
  name: 'INFO',
  minArgs: 0,
  maxArgs: 1,
  run(_args, _session, services) {
    return bulk(services.info());
  },
};
