/**
 * A server in this process over a MemoryStore the test can hold, fail or crash:
 * for what a connection sees while its requests wait for storage.
 */
import { SequencerServer } from '../../src/server/server.js';
import { Sequencer } from '../../src/core/sequencer.js';
import { MemoryStore } from '../../src/store/memory.js';

export interface InProcessServer {
  readonly store: MemoryStore;
  readonly seq: Sequencer;
  readonly server: SequencerServer;
  readonly port: number;
  /** Lets the store go, closes the server at once (no grace) and the core. */
  stop(): Promise<void>;
}

/** `reserve` 0 (the default here) is the gapless mode: every reply waits for its write. */
export async function startInProcessServer(reserve = 0n): Promise<InProcessServer> {
  const store = new MemoryStore();
  const seq = new Sequencer({ store, initial: 1n, reserve, maxSequences: 10 });
  await seq.open();
  const server = new SequencerServer(
    { source: seq, maxBatch: 1000n, passwordDigest: null, info: () => '', authFailed: () => {} },
    { maxConnections: 10, idleTimeoutMs: 0, outputLimit: 1 << 20 },
  );
  const port = await server.listen('127.0.0.1', 0);
  return {
    store,
    seq,
    server,
    port,
    async stop() {
      store.resume();
      await server.close(0);
      await seq.close();
    },
  };
}
