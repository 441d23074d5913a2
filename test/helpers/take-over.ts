/**
 * Run by a fault test inside namespaces of its own (a container sharing the data
 * directory): starts a server on the directory, takes `count` numbers from it one
 * request at a time, stops it with SIGTERM, and prints what happened, a line each:
 * `number <n>`, `refused <line>`, `exit <status>`.
 *
 * Usage: node --import tsx take-over.ts <data-dir> <count> [server options...]
 */
import { startServerProcess } from './server-process.js';
import { WireClient } from './wire.js';

const [dir, count, ...options] = process.argv.slice(2);
const server = await startServerProcess([`--data-dir=${dir}`, ...options]);
const c = await WireClient.connect(server.port);
for (let i = 0; i < Number(count); i++) {
  c.reset();
  c.send('GETSEQ\r\n');
  const line = (await c.until((text) => text.endsWith('\r\n'))).slice(0, -2);
  console.log(line.startsWith(':') ? `number ${line.slice(1)}` : `refused ${line}`);
}
c.close();
console.log(`exit ${await server.stop()}`);
