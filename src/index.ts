/**
 * The package's public API: the client and the errors it can meet. Numbers are
 * bigint throughout: they run up to 2^63-1, beyond what a JavaScript number
 * holds exactly. Running a server in-process is `dolmeangi/server`.
 */

// Client
export { SequencerClient } from './client/client.js';
export type { Batch, SequencerClientOptions } from './client/client.js';
export { SequenceAllocator } from './client/allocator.js';
export type { AllocatorOptions, BatchSource } from './client/allocator.js';
export type { SequenceInfo, ServerInfo } from './client/info.js';
export {
  ConnectionClosedError,
  NoServerAvailableError,
  NotLeaderError,
  ReplyProtocolError,
  ServerError,
  TimeoutError,
  fromWire,
} from './client/errors.js';

// Errors shared by the client and the server
export {
  ConfigError,
  DataDirLockedError,
  DolmeangiError,
  FencedError,
  ListenError,
  PersistenceError,
  StateCorruptError,
} from './errors.js';

