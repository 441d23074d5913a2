/**
 * Tools and libraries we did not write, against a real server: redis-cli,
 * redis-benchmark and ioredis (through its generic command call).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { runProgram, startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { WireClient } from '../helpers/wire.js';

const run = promisify(execFile);
let server: ServerProcess;

/** Fails with a way out rather than skipping: CI installs these, and a silent skip proves nothing. */
async function need(tool: string): Promise<void> {
  try {
    await run('sh', ['-c', `command -v ${tool}`]);
  } catch {
    throw new Error(`${tool} not found on PATH: install it with 'apt-get install -y redis-tools' (Debian)`);
  }
}

before(async () => {
  server = await startServerProcess(['--in-memory', '--initial=1']);
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

async function current(name: string): Promise<string> {
  const c = await WireClient.connect(server.port);
  try {
    c.send(`CURRENT ${name}\r\n`);
    return await c.until((t) => t.endsWith('\r\n'));
  } finally {
    c.close();
  }
}

test('redis-cli -p <port> GETSEQ prints (integer) 1', async () => {
  await need('redis-cli');
  const cli = (...args: string[]) => run('redis-cli', ['-h', '127.0.0.1', '-p', String(server.port), '--no-raw', ...args], { timeout: 10_000 });
  assert.equal((await cli('GETSEQ', 'cli')).stdout, '(integer) 1\n');
  assert.equal((await cli('GETSEQ', 'cli')).stdout, '(integer) 2\n');
  assert.equal((await cli('CURRENT', 'cli')).stdout, '(integer) 3\n');
  assert.equal((await cli('GETSEQ_BATCH', '100', 'cli')).stdout, '(integer) 3\n');
  assert.equal((await cli('PING')).stdout, 'PONG\n');
  assert.match((await cli('FOOBAR')).stdout, /^\(error\) ERR Unknown command 'FOOBAR'\. Supported: GETSEQ/);
  assert.match((await cli('INFO')).stdout, /# Server/);
});

test('redis-cli --pipe: its closing ECHO comes back, so it ends at once with every reply counted', async () => {
  await need('redis-cli');
  const out = await runProgram('redis-cli', ['-h', '127.0.0.1', '-p', String(server.port), '--pipe'], {
    input: 'GETSEQ pipe\r\nGETSEQ pipe\r\nGETSEQ_BATCH 10 pipe\r\n',
    timeoutMs: 10_000,
  });
  assert.equal(out.code, 0, out.stdout + out.stderr);
  assert.match(out.stdout, /errors: 0, replies: 3/);
  assert.equal(await current('pipe'), ':13\r\n');
});

test('redis-benchmark drives GETSEQ: every request got its own number', async () => {
  await need('redis-benchmark');
  await run('redis-benchmark', ['-h', '127.0.0.1', '-p', String(server.port), '-c', '10', '-P', '4', '-n', '2000', '-q', 'GETSEQ', 'bench'], {
    timeout: 30_000,
  });
  assert.equal(await current('bench'), ':2001\r\n');
});

test('ioredis: generic commands, pipelines, and exact 64-bit values with stringNumbers', async () => {
  const redis = new Redis({ host: '127.0.0.1', port: server.port, stringNumbers: true, maxRetriesPerRequest: 1 });
  try {
    assert.equal(await redis.call('GETSEQ', 'ioredis'), '1');
    assert.equal(await redis.call('GETSEQ_BATCH', '10', 'ioredis'), '2');
    assert.equal(await redis.call('CURRENT', 'ioredis'), '12');
    const pipe = redis.pipeline();
    for (let i = 0; i < 100; i++) pipe.call('GETSEQ', 'ioredis');
    const results = (await pipe.exec())!.map(([err, v]) => {
      assert.equal(err, null);
      return BigInt(v as string);
    });
    assert.deepEqual(results, Array.from({ length: 100 }, (_, i) => BigInt(12 + i)));
    await assert.rejects(redis.call('GETSEQ_BATCH', '0'), /invalid count/);
  } finally {
    redis.disconnect();
  }
  const big = await startServerProcess(['--in-memory', '--initial=9223372036854775806']);
  const r = new Redis({ host: '127.0.0.1', port: big.port, stringNumbers: true, maxRetriesPerRequest: 1 });
  try {
    assert.equal(await r.call('GETSEQ'), '9223372036854775806');
    assert.equal(await r.call('GETSEQ'), '9223372036854775807');
    await assert.rejects(r.call('GETSEQ'), /sequence exhausted/);
    r.disconnect();
    assert.equal(await big.stop(), 0);
  } finally {
    r.disconnect();
    await big.stop();
  }
});

test('ioredis as it connects by default (HELLO 3 with the password, then AUTH) and with a connection name; a MULTI fails whole and takes nothing', async () => {
  const locked = await startServerProcess(['--in-memory', '--requirepass=pw']);
  const redis = new Redis({ host: '127.0.0.1', port: locked.port, password: 'pw', connectionName: 'interop', stringNumbers: true, maxRetriesPerRequest: 1 });
  try {
    assert.equal(await redis.call('GETSEQ', 'io'), '1');
    assert.equal(await redis.call('CLIENT', 'GETNAME'), 'interop');
    const results = await redis.multi().call('GETSEQ', 'io').call('GETSEQ_BATCH', '5', 'io').exec().then(
      () => 'committed',
      (err: Error) => err.message,
    );
    assert.match(results, /EXECABORT Transaction discarded/);
    assert.equal(await redis.call('CURRENT', 'io'), '2', 'nothing inside MULTI took a number');
  } finally {
    redis.disconnect();
    assert.equal(await locked.stop(), 0);
  }
});
