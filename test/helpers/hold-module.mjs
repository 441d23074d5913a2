/**
 * Loaded with `node --import`: holds the loading of one module (the URL ending in
 * HOLD_MODULE) until the FIFO at HOLD_FIFO has been opened for writing and closed.
 * A test opening the FIFO knows the process has reached that module, and can act
 * while it waits there.
 */
import { register } from 'node:module';

register('./hold-module-hooks.mjs', import.meta.url, { data: { suffix: process.env.HOLD_MODULE, fifo: process.env.HOLD_FIFO } });
