/**
 * The client library's own rates, driven from this process against a real
 * server: one number per await, many requests in flight on the one pipelined
 * socket, and the allocator's local range cache.
 */
import { SequencerClient } from '../index.js';
import { cpuSeconds } from './proc.js';
import { HOST, type RunningServer } from './servers.js';
import type { ClientRow } from './results.js';

/** Requests in flight at once in the pipelined mode. */
const IN_FLIGHT = 100;

interface Budget {
  /** Stop after about this long... */
  readonly seconds: number;
  /** ...or this many numbers, whichever comes first. */
  readonly maxNumbers: number;
}

export async function clientLibraryRates(server: RunningServer, budget: Budget): Promise<ClientRow[]> {
  const client = new SequencerClient({ servers: [`${HOST}:${server.port}`], reconnect: false });
  try {
    await client.ping();
    const rows: ClientRow[] = [];
    rows.push(
      await timed(server, 'sequential', 'await getNextSequence(), one at a time', budget, async (until) => {
        let n = 0;
        while (until(n)) {
          await client.getNextSequence();
          n++;
        }
        return n;
      }),
    );
    rows.push(
      await timed(server, 'pipelined', `${IN_FLIGHT} getNextSequence() calls in flight on one socket`, budget, async (until) => {
        let n = 0;
        const worker = async () => {
          while (until(n)) {
            n++;
            await client.getNextSequence();
          }
        };
        await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
        return n;
      }),
    );
    const allocator = client.allocator();
    rows.push(
      await timed(server, 'allocator', `await allocator().next(), default options (batch ${allocator.batchSize})`, budget, async (until) => {
        let n = 0;
        while (until(n)) {
          await allocator.next();
          n++;
        }
        return n;
      }),
    );
    return rows;
  } finally {
    await client.close();
  }
}

/**
 * Runs `body` until its budget is spent. `until(n)` is the loop condition; it
 * reads the clock only every 256 numbers, so timing stays off the measured path.
 */
async function timed(
  server: RunningServer,
  mode: ClientRow['mode'],
  setup: string,
  budget: Budget,
  body: (until: (n: number) => boolean) => Promise<number>,
): Promise<ClientRow> {
  const started = performance.now();
  const deadline = started + budget.seconds * 1000;
  let stop = false;
  const until = (n: number) => {
    if (stop || n >= budget.maxNumbers) return false;
    if ((n & 255) === 0 && performance.now() >= deadline) stop = true;
    return !stop;
  };
  const clientCpuBefore = process.cpuUsage();
  const serverCpuBefore = cpuSeconds(server.pid);
  const numbers = await body(until);
  const seconds = (performance.now() - started) / 1000;
  const clientCpu = process.cpuUsage(clientCpuBefore);
  const serverCpu = cpuSeconds(server.pid) - serverCpuBefore;
  return {
    mode,
    setup,
    numbers,
    seconds,
    numbersPerSecond: numbers / seconds,
    clientCpuUsPerNumber: (clientCpu.user + clientCpu.system) / numbers,
    serverCpuUsPerNumber: (serverCpu * 1e6) / numbers,
  };
}
