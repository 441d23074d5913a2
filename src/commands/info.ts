import type { Command } from './types.js';
import { bulk, utf8Bytes } from '../protocol/encoder.js';

/** INFO [section]: the section is accepted for Redis clients' sake; all facts are always sent. */
export const info: Command = {
  name: 'INFO',
  minArgs: 0,
  maxArgs: 1,
  run(_args, _session, services) {
    // Paths and error reasons may hold any UTF-8; bulk() counts one character per byte.
    return () => bulk(utf8Bytes(services.info()));
  },
};
