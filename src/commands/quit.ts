import type { Command } from './types.js';
import { OK } from '../protocol/encoder.js';

export const quit: Command = {
  name: 'QUIT',
  minArgs: 0,
  maxArgs: 0,
  beforeAuth: true,
  whileStopping: true,
  inTransaction: true,
  run(_args, session) {
    session.quit = true;
    return OK;
  },
};
