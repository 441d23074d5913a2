/**
 * Run by a fault test inside namespaces of its own (a container sharing the data
 * directory): starts a server on the directory, takes `count` numbers from it one
 * request at a time, stops it with SIGTERM, and prints what happened, a line each:
 * `number <n>`, `refused <line>`, `exit <status>`. Plain JavaScript, so that it
 * needs nothing but node there.
 *
 * Usage: node take-over.mjs <cli> <data-dir> <count> [server options...]
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { once } from 'node:events';

const [cli, dir, countText, ...options] = process.argv.slice(2);
const count = Number(countText);
const server = spawn(process.execPath, [cli, 'sequencer', '--host=127.0.0.1', '--port=0', '--metrics-port=0', `--data-dir=${dir}`, ...options], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const deadline = setTimeout(() => {
  server.kill('SIGKILL');
  console.error('take-over: no end within 20 s');
  process.exit(1);
}, 20_000);

const port = await new Promise((resolve, reject) => {
  let out = '';
  server.stdout.setEncoding('utf8').on('data', (text) => {
    out += text;
    for (const line of out.split('\n')) {
      if (!line.includes('"listening"')) continue;
      resolve(JSON.parse(line).port);
    }
  });
  server.once('exit', (code) => reject(new Error(`the server exited (${code}) before listening: ${out}`)));
});

const socket = net.connect({ port, host: '127.0.0.1' });
socket.setEncoding('latin1');
await once(socket, 'connect');
let buffered = '';
for (let i = 0; i < count; i++) {
  socket.write('GETSEQ\r\n');
  while (!buffered.includes('\r\n')) buffered += (await once(socket, 'data'))[0];
  const nl = buffered.indexOf('\r\n');
  const line = buffered.slice(0, nl);
  buffered = buffered.slice(nl + 2);
  console.log(line.startsWith(':') ? `number ${line.slice(1)}` : `refused ${line}`);
}
socket.end();
server.kill('SIGTERM');
const [code] = await once(server, 'exit');
console.log(`exit ${code}`);
clearTimeout(deadline);
