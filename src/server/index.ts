/**
 * `dolmeangi/server`: running a sequencer inside another Node.js process. Apart
 * from the package root so that code using only the client does not load the
 * server's dependencies (pino, prom-client, and etcd3 in group mode).
 */
export { startServer } from './run.js';
export type { RunningServer, StartOptions } from './run.js';
export { parseConfig } from '../config.js';
export type { Config } from '../config.js';
