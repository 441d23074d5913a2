/**
 * The client library and the CLI client commands against the real server
 * (the built dist/cli/main.js, started as a child process).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SequenceAllocator, SequencerClient, ServerError, type SequencerClientOptions } from '../../src/index.js';
import { runCli, startServerProcess, type ServerProcess } from '../helpers/server-process.js';

const processes: ServerProcess[] = [];
const clients: SequencerClient[] = [];
const dirs: string[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(processes.map((p) => p.kill()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function server(args: string[] = ['--in-memory']): Promise<ServerProcess> {
  const p = await startServerProcess(args);
  processes.push(p);
  return p;
}

function client(s: ServerProcess, options: SequencerClientOptions = {}): SequencerClient {
  const c = new SequencerClient({ servers: [s.address], ...options });
  clients.push(c);
  return c;
}

async function dataDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-client-'));
  dirs.push(dir);
  return dir;
}

test("the seed's session through the client", async () => {
  const c = client(await server());
  assert.equal(await c.getNextSequence(), 1n);
  assert.equal(await c.getNextSequence(), 2n);
  assert.equal(await c.getNextSequence(), 3n);
  assert.equal(await c.current(), 4n);
  assert.equal(await c.current(), 4n);
  assert.equal(await c.getNextSequence(), 4n);
  await c.ping();
});

test('1,000 concurrent getNextSequence calls on one client: all distinct, no gap', async () => {
  const c = client(await server());
  const numbers = await Promise.all(Array.from({ length: 1000 }, () => c.getNextSequence()));
  const sorted = [...numbers].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  assert.deepEqual(sorted, Array.from({ length: 1000 }, (_, i) => BigInt(i + 1)));
});

test('batches: the caller owns first..first+count-1 and the sequence moves past them', async () => {
  const c = client(await server());
  const batch = await c.getBatch(100);
  assert.deepEqual(batch, { first: 1n, count: 100n });
  assert.equal(await c.getNextSequence(), 101n);
  const named = await c.getBatch(5n, 'orders');
  assert.deepEqual(named, { first: 1n, count: 5n });
  assert.equal(await c.current('orders'), 6n);
  assert.equal(await c.current(), 102n, 'sequences are independent');
});

test('numbers are exact beyond 2^53', async () => {
  const c = client(await server(['--in-memory', '--initial=9007199254740993']));
  assert.equal(await c.getNextSequence(), 9007199254740993n);
  assert.equal(await c.getNextSequence(), 9007199254740994n);
});

test('100,000 numbers from an allocator: distinct, increasing, far fewer round trips', async () => {
  const c = client(await server());
  let fetches = 0;
  const allocator = new SequenceAllocator(
    { getBatch: (count, name) => (fetches++, c.getBatch(count, name)) },
    { batch: 1000 },
  );
  let last = 0n;
  for (let i = 0; i < 100_000; i++) {
    const n = allocator.tryNext() ?? (await allocator.next());
    assert.ok(n > last, `${n} after ${last}`);
    last = n;
  }
  assert.ok(fetches <= 102, `${fetches} fetches for 100,000 numbers`);
  assert.ok((await c.getNextSequence()) > last, 'the server never hands out what the allocator holds');
});

test('an adaptive allocator against a server with a small --max-batch stops growing at that limit, and no call fails', async () => {
  const c = client(await server(['--in-memory', '--max-batch=5000']));
  const sizes: bigint[] = [];
  const allocator = new SequenceAllocator({ getBatch: (count, name) => (sizes.push(count), c.getBatch(count, name)) }, { batch: 1000, adaptive: true });
  let last = 0n;
  for (let i = 0; i < 100_000; i++) {
    const n = allocator.tryNext() ?? (await allocator.next());
    assert.ok(n > last, `${n} after ${last}`);
    last = n;
  }
  assert.equal(allocator.batchSize, 5000, `sizes asked for: ${sizes.join(',')}`);
  assert.equal(sizes.filter((s) => s > 5000n).length, 1, 'one refusal taught it the limit');
});

test('info() parses the server INFO', async () => {
  const c = client(await server());
  await c.getNextSequence();
  const info = await c.info();
  assert.ok(info.fields.version, 'version field');
  assert.ok(info.fields.role, 'role field');
  const seq = info.sequences.find((s) => s.name === 'default');
  assert.ok(seq, 'the default sequence is listed');
  assert.equal(seq.current, 2n);
  assert.match(info.raw, /sequence:name=default,/);
});

test('the client reconnects by itself after a server restart, with no gap after a clean stop', async () => {
  const dir = await dataDir();
  const first = await server([`--data-dir=${dir}`]);
  const c = client(first, { requestTimeoutMs: 15_000, reconnect: { minDelayMs: 20, maxDelayMs: 200 } });
  assert.equal(await c.getNextSequence(), 1n);
  assert.equal(await first.stop(), 0);
  // A call made while the server is down waits for it (PING: a GETSEQ racing the
  // server's close could be written to the dying socket, and would then fail by design).
  const waiting = c.ping();
  await server([`--data-dir=${dir}`, `--port=${first.port}`]);
  await waiting;
  assert.equal(await c.getNextSequence(), 2n);
});

test('a password: AUTH is sent first; without it NOAUTH, with a wrong one WRONGPASS', async () => {
  const s = await server(['--in-memory', '--requirepass=hunter2']);
  assert.equal(await client(s, { password: 'hunter2' }).getNextSequence(), 1n);
  const anonymous = await client(s).getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(anonymous instanceof ServerError && anonymous.wireCode === 'NOAUTH', String(anonymous));
  const wrong = await client(s, { password: 'nope' }).getNextSequence().then(() => null, (e: unknown) => e);
  assert.ok(wrong instanceof ServerError && wrong.wireCode === 'WRONGPASS', String(wrong));
});

test('CLI: getseq, getseq --count, current, info, ping', async () => {
  const s = await server();
  const at = ['--server', s.address];
  assert.deepEqual(await runCli(['getseq', ...at]), { code: 0, stdout: '1\n', stderr: '' });
  assert.deepEqual(await runCli(['getseq', '--count', '10', ...at]), { code: 0, stdout: '2\n', stderr: '' });
  assert.deepEqual(await runCli(['current', ...at]), { code: 0, stdout: '12\n', stderr: '' });
  assert.deepEqual(await runCli(['getseq', 'orders', ...at]), { code: 0, stdout: '1\n', stderr: '' });
  assert.deepEqual(await runCli(['ping'], { env: { SEQUENCER_SERVER: s.address } }), { code: 0, stdout: 'PONG\n', stderr: '' });
  const info = await runCli(['info', ...at]);
  assert.equal(info.code, 0);
  assert.match(info.stdout, /sequence:name=orders,current=2,/);
});

test('CLI exit codes: 1 for a server error or no server, 2 for bad usage', async () => {
  const s = await server();
  // Above the server's --max-batch (1,000,000 by default): the CLI cannot know it, the server refuses it.
  const bad = await runCli(['getseq', '--count', '2000000', '--server', s.address]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^dolmeangi: server replied: ERR /);
  const badName = await runCli(['getseq', 'no spaces allowed!', '--server', s.address]);
  assert.equal(badName.code, 2, 'a name the server would refuse is bad usage, and nothing is sent');
  assert.match(badName.stderr, /^dolmeangi: invalid sequence name/);
  await s.kill();
  const gone = await runCli(['getseq', '--server', s.address]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /^dolmeangi: no server could be reached/);
  const usage = await runCli(['getseq', '--count', 'x']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /^dolmeangi: --count/);
});
