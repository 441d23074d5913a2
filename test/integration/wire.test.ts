/**
 * Byte-for-byte protocol tests against a real server process.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { WireClient, ask, resp } from '../helpers/wire.js';
import { waitFor } from '../helpers/wait.js';
import { mkdtemp, rename, rm } from 'node:fs/promises';
import { SequencerClient, ServerError } from '../../src/index.js';
import net from 'node:net';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';

const SUPPORTED = 'Supported: GETSEQ, CURRENT, GETSEQ_BATCH, PING, INFO, AUTH, QUIT';
const MAX = 9223372036854775807n;

let server: ServerProcess;
const clients: WireClient[] = [];

async function connect(s: ServerProcess = server): Promise<WireClient> {
  const c = await WireClient.connect(s.port);
  clients.push(c);
  return c;
}

/** Sends one request on a fresh connection, checks the exact reply bytes, and returns the connection. */
async function exchange(request: string, expected: string, s: ServerProcess = server): Promise<WireClient> {
  const c = await connect(s);
  await c.exchange(request, expected);
  return c;
}

before(async () => {
  server = await startServerProcess(['--in-memory', '--max-batch=1000']);
});

after(async () => {
  for (const c of clients) c.close();
  assert.equal(await server.stop(), 0);
});

test("the seed's telnet session, byte for byte, inline with CRLF", async () => {
  const s = await startServerProcess(['--in-memory']);
  try {
    const c = await connect(s);
    const replies = [':1', ':2', ':3', ':4', ':4', ':4'];
    const commands = ['GETSEQ', 'GETSEQ', 'GETSEQ', 'CURRENT', 'CURRENT', 'GETSEQ'];
    let expected = '';
    for (let i = 0; i < commands.length; i++) {
      c.send(`${commands[i]}\r\n`);
      expected += `${replies[i]}\r\n`;
      await c.expect(expected);
    }
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
  }
});

test('LF-only lines, RESP arrays and mixed pipelines on one connection', async () => {
  const c = await connect();
  c.send('CURRENT seedlf\nGETSEQ seedlf\n' + resp('GETSEQ', 'seedlf') + 'current seedlf\r\n' + resp('ping'));
  await c.expect(':1\r\n:1\r\n:2\r\n:3\r\n+PONG\r\n');
});

test('command names are case-insensitive', async () => {
  await exchange('gEtSeQ casey\r\nCuRrEnT casey\r\n', ':1\r\n:2\r\n');
});

test('GETSEQ_BATCH: count as 100 or :100, the range is owned, the next GETSEQ follows it', async () => {
  await exchange(
    'GETSEQ_BATCH 100 batchy\r\nGETSEQ batchy\r\n' + resp('GETSEQ_BATCH', ':10', 'batchy') + 'CURRENT batchy\r\n',
    ':1\r\n:101\r\n:102\r\n:112\r\n',
  );
});

test('PING, PING with a message, QUIT closes after +OK', async () => {
  const c = await exchange('PING\r\nPING hello\r\nQUIT\r\nGETSEQ\r\n', '+PONG\r\n$5\r\nhello\r\n+OK\r\n');
  await c.waitClosed();
  assert.equal(c.text, '+PONG\r\n$5\r\nhello\r\n+OK\r\n', 'nothing after QUIT is answered');
});

test('INFO is a bulk string of key:value lines', async () => {
  const c = await connect();
  c.send('GETSEQ infoseq\r\nINFO\r\n');
  const text = await c.until((t) => /\r\n\$\d+\r\n[\s\S]*\r\n$/.test(t) && t.length >= Number(/\$(\d+)/.exec(t)![1]) + 10);
  const body = text.slice(text.indexOf('\r\n', 4) + 2);
  const len = Number(/^:1\r\n\$(\d+)\r\n/.exec(text)![1]);
  assert.equal(Buffer.byteLength(body, 'latin1'), len + 2);
  for (const key of ['version', 'mode', 'role', 'uptime_in_seconds', 'connected_clients', 'persistence']) {
    assert.match(body, new RegExp(`\\r\\n${key}:`), key);
  }
  assert.match(body, /mode:in-memory/);
  assert.match(body, /\r\nreserve:none\r\n/, 'nothing is reserved in memory');
  assert.match(body, /\r\ncmdstat_getseq:calls=\d+\r\n/);
  assert.match(body, /\r\ntotal_commands_processed:\d+\r\n/);
  assert.match(body, /sequence:name=infoseq,current=2,durable_mark=none,issued=1/);
});

test('server text is UTF-8 on the wire: a data directory named in UTF-8 arrives intact in INFO and in errors, and the client reads it back', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dolmeangi-데이터-'));
  const s = await startServerProcess([`--data-dir=${dir}`, '--reserve=1']);
  const client = new SequencerClient({ servers: [`127.0.0.1:${s.port}`], requestTimeoutMs: 2000 });
  try {
    // ask() reads one character per byte and waits for as many bytes as the prefix says.
    const text = await ask(s.port, 'INFO\r\n');
    const len = Number(/^\$(\d+)\r\n/.exec(text)![1]);
    const start = text.indexOf('\r\n') + 2;
    assert.equal(text.length, start + len + 2, 'the length prefix is the byte count');
    assert.ok(Buffer.from(text, 'latin1').toString('utf8').includes(`\r\nstore:file:${dir}\r\n`));
    assert.equal((await client.info()).fields.store, `file:${dir}`);

    // With the directory gone, a number past the mark is refused with a reason naming it.
    assert.equal(await client.getNextSequence(), 1n);
    await rename(dir, `${dir}.away`);
    const refused = await client.getNextSequence().then(() => null, (e: unknown) => e);
    assert.ok(refused instanceof ServerError, String(refused));
    assert.ok(refused.message.includes(`persistence unavailable: stat ${dir}/`), refused.message);
    const raw = await ask(s.port, 'GETSEQ\r\n');
    assert.ok(Buffer.from(raw, 'latin1').toString('utf8').startsWith(`-ERR persistence unavailable: stat ${dir}/`), raw);
    await rename(`${dir}.away`, dir);
    await client.close();
    // Back in place, the directory takes the exact next numbers at the clean stop.
    assert.equal(await s.stop(), 0);
  } finally {
    await client.close();
    await s.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(`${dir}.away`, { recursive: true, force: true });
  }
});

/** Runs `body` against a gapless server on a fresh data directory, then stops it (cleanly: exit 0) and removes the directory. */
async function withGaplessServer(body: (s: ServerProcess, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dolmeangi-gapless-'));
  const s = await startServerProcess([`--data-dir=${dir}`, '--reserve=0']);
  try {
    await body(s, dir);
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(`${dir}.away`, { recursive: true, force: true });
  }
}

test('gapless: CURRENT pipelined behind a GETSEQ that storage fails names the number that GETSEQ did not take', async () => {
  await withGaplessServer(async (s, dir) => {
    const c = await connect(s);
    c.send('GETSEQ\r\n');
    await c.expect(':1\r\n');
    await rename(dir, `${dir}.away`);
    c.reset();
    // Both wait for the write: the GETSEQ for its number, the CURRENT to learn whether the GETSEQ took one.
    c.send('GETSEQ\r\nCURRENT\r\n');
    const text = await c.until((t) => /\r\n:\d+\r\n$/.test(t), 5000, 'both replies');
    assert.match(text, /^-ERR persistence unavailable: [^\r]*\r\n:2\r\n$/);
    await rename(`${dir}.away`, dir);
    // Refusals take no numbers: the first GETSEQ served once storage is back gets 2.
    let served = '';
    await waitFor(async () => {
      c.reset();
      c.send('GETSEQ\r\n');
      served = await c.until((t) => t.endsWith('\r\n'), 5000, 'a reply');
      return served.startsWith(':');
    }, 'storage to recover', 10_000);
    assert.equal(served, ':2\r\n');
  });
});

test('INFO pipelined behind replies that wait for storage reports the state they left: nothing older than what the client read first', async () => {
  await withGaplessServer(async (s) => {
    const c = await connect(s);
    c.send('GETSEQ\r\nGETSEQ\r\nINFO\r\n');
    const text = await c.until((t) => /^:1\r\n:2\r\n\$\d+\r\n/.test(t) && t.endsWith('\r\n\r\n'), 5000, 'two numbers and INFO');
    // Made when read, INFO said issued=0 and durable_mark=1: as if 1 and 2, read just before it, were neither issued nor durable.
    assert.match(text, /\r\nsequence:name=default,current=3,durable_mark=3,issued=2\r\n/);
  });
});

test('unknown command: the name as sent and every supported command', async () => {
  const c = await exchange('FOOBAR\r\n', `-ERR Unknown command 'FOOBAR'. ${SUPPORTED}\r\n`);
  c.reset();
  c.send(resp('fooBar', 'x'));
  await c.expect(`-ERR Unknown command 'fooBar'. ${SUPPORTED}\r\n`);
  c.reset();
  // Control bytes in a RESP name cannot forge extra reply lines.
  c.send(resp('A\r\n:1'));
  await c.expect(`-ERR Unknown command 'A  :1'. ${SUPPORTED}\r\n`);
  c.reset();
  c.send('PING\r\n');
  await c.expect('+PONG\r\n');
});

test('ECHO, SELECT and CLIENT, for Redis tools and client handshakes; not offered in the unknown-command list', async () => {
  const c = await exchange(
    'ECHO hello\r\n' + resp('ECHO', 'two words\r\n') + 'ECHO\r\n',
    "$5\r\nhello\r\n$11\r\ntwo words\r\n\r\n-ERR wrong number of arguments for 'ECHO'\r\n",
  );
  c.reset();
  await c.exchange(
    'SELECT 0\r\nSELECT 1\r\nSELECT -1\r\nSELECT 00\r\nSELECT x\r\n',
    '+OK\r\n' + '-ERR DB index is out of range (this server has one database, 0)\r\n'.repeat(2) + '-ERR value is not an integer or out of range\r\n'.repeat(2),
  );
  c.reset();
  await c.exchange('CLIENT GETNAME\r\nCLIENT SETNAME app-1\r\nclient getname\r\n', '$-1\r\n+OK\r\n$5\r\napp-1\r\n');
  c.reset();
  await c.exchange(
    resp('CLIENT', 'SETNAME', 'a b') + resp('CLIENT', 'SETNAME', '') + 'CLIENT GETNAME\r\n' + resp('CLIENT', 'SETINFO', 'LIB-NAME', 'x y'),
    '-ERR Client names cannot contain spaces, newlines or special characters.\r\n+OK\r\n$-1\r\n+OK\r\n',
  );
  c.reset();
  // Kept for the connection's life, so bounded.
  await c.exchange(`CLIENT SETNAME ${'n'.repeat(256)}\r\nCLIENT SETNAME ${'n'.repeat(257)}\r\nCLIENT GETNAME\r\n`, `+OK\r\n-ERR Client names are at most 256 bytes here\r\n$256\r\n${'n'.repeat(256)}\r\n`);
  c.reset();
  await c.exchange(
    'CLIENT SETNAME\r\nCLIENT GETNAME x\r\nCLIENT SETINFO LIB-NAME\r\nCLIENT LIST\r\nCLIENT\r\n',
    "-ERR wrong number of arguments for 'client|setname' command\r\n" +
      "-ERR wrong number of arguments for 'client|getname' command\r\n" +
      "-ERR wrong number of arguments for 'client|setinfo' command\r\n" +
      "-ERR unknown subcommand 'LIST' of CLIENT. Supported: SETNAME, GETNAME, SETINFO\r\n" +
      "-ERR wrong number of arguments for 'CLIENT'\r\n",
  );
  // A name lasts as long as its connection.
  await exchange('CLIENT GETNAME\r\n', '$-1\r\n');
  await exchange('ECH\r\n', `-ERR Unknown command 'ECH'. ${SUPPORTED}\r\n`);
});

test('MULTI: every command up to EXEC is refused unrun, and EXEC aborts, so a transaction cannot take numbers its client drops', async () => {
  const name = 'multi';
  const notRun = (command: string) =>
    `-ERR ${command} was not run: this server has no transactions, so EXEC will discard this one; send the commands without MULTI (a pipeline needs none)\r\n`;
  const c = await exchange(
    `MULTI\r\nGETSEQ ${name}\r\nGETSEQ_BATCH 5 ${name}\r\n${resp('AUTH', 'x')}NOSUCH\r\nEXEC\r\nCURRENT ${name}\r\n`,
    `+OK\r\n${notRun('GETSEQ')}${notRun('GETSEQ_BATCH')}${notRun('AUTH')}-ERR Unknown command 'NOSUCH'. ${SUPPORTED}\r\n` +
      '-EXECABORT Transaction discarded because of previous errors.\r\n:1\r\n',
  );
  c.reset();
  // Nested MULTI is refused and leaves the transaction as it was; DISCARD ends it; after it commands run.
  await c.exchange(
    `MULTI\r\nMULTI\r\nDISCARD\r\nGETSEQ ${name}\r\nMULTI\r\nEXEC\r\nEXEC\r\nDISCARD\r\n`,
    '+OK\r\n-ERR MULTI calls can not be nested\r\n+OK\r\n:1\r\n+OK\r\n*0\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n',
  );
  c.reset();
  // A transaction command with the wrong arity fails the transaction too, as in Redis.
  await c.exchange('MULTI\r\nEXEC x\r\nEXEC\r\n', "+OK\r\n-ERR wrong number of arguments for 'EXEC'\r\n-EXECABORT Transaction discarded because of previous errors.\r\n");
  c.reset();
  // So does an unknown command alone.
  await c.exchange('MULTI\r\nNOSUCH\r\nEXEC\r\n', `+OK\r\n-ERR Unknown command 'NOSUCH'. ${SUPPORTED}\r\n-EXECABORT Transaction discarded because of previous errors.\r\n`);
  c.reset();
  // QUIT still quits.
  await c.exchange(`MULTI\r\nQUIT\r\nGETSEQ ${name}\r\n`, '+OK\r\n+OK\r\n');
  await c.waitClosed();
  assert.equal(await ask(server.port, `CURRENT ${name}\r\n`), ':2\r\n', 'only the GETSEQ outside MULTI took a number');
});

test('wrong number of arguments, bad counts and bad names; the connection stays open', async () => {
  const c = await connect();
  const cases: Array<[string, string]> = [
    ['GETSEQ a b\r\n', "-ERR wrong number of arguments for 'GETSEQ'\r\n"],
    ['CURRENT a b\r\n', "-ERR wrong number of arguments for 'CURRENT'\r\n"],
    ['GETSEQ_BATCH\r\n', "-ERR wrong number of arguments for 'GETSEQ_BATCH'\r\n"],
    ['QUIT now\r\n', "-ERR wrong number of arguments for 'QUIT'\r\n"],
    ['GETSEQ_BATCH 0\r\n', "-ERR invalid count '0': expected an integer from 1 to 1000 (--max-batch)\r\n"],
    ['GETSEQ_BATCH 1001\r\n', "-ERR invalid count '1001': expected an integer from 1 to 1000 (--max-batch)\r\n"],
    ['GETSEQ_BATCH -5\r\n', "-ERR invalid count '-5': expected an integer from 1 to 1000 (--max-batch)\r\n"],
    ['GETSEQ_BATCH abc\r\n', "-ERR invalid count 'abc': expected an integer from 1 to 1000 (--max-batch)\r\n"],
    ['GETSEQ_BATCH 1.5\r\n', "-ERR invalid count '1.5': expected an integer from 1 to 1000 (--max-batch)\r\n"],
    ['GETSEQ bad/name\r\n', "-ERR invalid sequence name 'bad/name': use 1-64 characters of A-Z a-z 0-9 _ . : -\r\n"],
    ['GETSEQ_BATCH 5 bad*\r\n', "-ERR invalid sequence name 'bad*': use 1-64 characters of A-Z a-z 0-9 _ . : -\r\n"],
    [`CURRENT ${'n'.repeat(65)}\r\n`, `-ERR invalid sequence name '${'n'.repeat(64)}...': use 1-64 characters of A-Z a-z 0-9 _ . : -\r\n`],
    [`GETSEQ_BATCH ${'9'.repeat(33)}\r\n`, `-ERR invalid count '${'9'.repeat(32)}...': expected an integer from 1 to 1000 (--max-batch)\r\n`],
    [`${'X'.repeat(129)}\r\n`, `-ERR Unknown command '${'X'.repeat(128)}...'. ${SUPPORTED}\r\n`],
    // At the limit exactly, nothing is cut and nothing marked.
    [`${'X'.repeat(128)}\r\n`, `-ERR Unknown command '${'X'.repeat(128)}'. ${SUPPORTED}\r\n`],
    [`GETSEQ_BATCH ${'9'.repeat(32)}\r\n`, `-ERR invalid count '${'9'.repeat(32)}': expected an integer from 1 to 1000 (--max-batch)\r\n`],
    // Sent as UTF-8 (é is C3 A9; replies are compared as latin1): never half a character before the mark.
    [`${'a'.repeat(127)}éé\r\n`, `-ERR Unknown command '${'a'.repeat(127)}...'. ${SUPPORTED}\r\n`],
    [`${'a'.repeat(126)}éb\r\n`, `-ERR Unknown command '${'a'.repeat(126)}\xc3\xa9...'. ${SUPPORTED}\r\n`],
  ];
  for (const [request, reply] of cases) {
    c.reset();
    c.send(request);
    await c.expect(reply);
  }
  c.reset();
  c.send(`GETSEQ ${'n'.repeat(64)}\r\nGETSEQ a.b:c-d_E9\r\n`);
  await c.expect(':1\r\n:1\r\n');
});

test('--max-sequences bounds how many names exist', async () => {
  const s = await startServerProcess(['--in-memory', '--max-sequences=2']);
  try {
    const c = await connect(s);
    c.send('GETSEQ\r\nGETSEQ two\r\nGETSEQ three\r\nCURRENT three\r\nGETSEQ two\r\n');
    const err = '-ERR too many sequences: at most 2 may exist (--max-sequences); use an existing name\r\n';
    await c.expect(`:1\r\n:1\r\n${err}${err}:2\r\n`);
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
  }
});

test('protocol errors get -ERR Protocol error and the connection is closed', async () => {
  const cases: Array<[string, string]> = [
    ['*x\r\n', '-ERR Protocol error: invalid multibulk length\r\n'],
    ['*1\r\n+PING\r\n', "-ERR Protocol error: expected '$', got '+'\r\n"],
    [`*1\r\n$${64 * 1024 + 1}\r\n`, '-ERR Protocol error: bulk string longer than 65536 bytes\r\n'],
    ['*1025\r\n', '-ERR Protocol error: too many arguments (at most 1024)\r\n'],
    ['A'.repeat(64 * 1024 + 2), '-ERR Protocol error: too big inline request\r\n'],
  ];
  for (const [request, reply] of cases) {
    const c = await exchange('PING\r\n' + request, '+PONG\r\n' + reply);
    await c.waitClosed();
  }
});

test('after QUIT or a protocol error the connection is closed even when the client keeps its side open', async () => {
  const s = await startServerProcess(['--in-memory', '--timeout=0']);
  const connected = async () => Number(/connected_clients:(\d+)/.exec(await ask(s.port, 'INFO\r\n'))?.[1]);
  try {
    for (const [request, reply] of [
      ['QUIT\r\n', '+OK\r\n'],
      ['*x\r\n', '-ERR Protocol error: invalid multibulk length\r\n'],
    ] as const) {
      // A client that never ends its own side, as a half-closing tool might.
      const half = net.connect({ port: s.port, host: '127.0.0.1', allowHalfOpen: true });
      half.on('error', () => {});
      let received = '';
      half.on('data', (d: Buffer) => (received += d.toString('latin1')));
      const ended = once(half, 'end');
      half.write(request);
      await ended;
      assert.equal(received, reply);
      try {
        // Only the INFO connection asking is left, though `half` never closed.
        await waitFor(async () => (await connected()) === 1, `the server to close the connection after ${JSON.stringify(request)}`, 3000);
      } finally {
        half.destroy();
      }
    }
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
  }
});

test('an inline line of more than 1,024 words is a request with the wrong arity, not a protocol error', async () => {
  const c = await exchange(`GETSEQ${' a'.repeat(1024)}\r\nPING\r\n`, "-ERR wrong number of arguments for 'GETSEQ'\r\n+PONG\r\n");
  assert.equal(c.closed, false);
});

test('the largest line and bulk string are accepted', async () => {
  await exchange(`PING ${'p'.repeat(64 * 1024 - 5)}\r\n`, `$${64 * 1024 - 5}\r\n${'p'.repeat(64 * 1024 - 5)}\r\n`);
  await exchange(resp('PING', 'q'.repeat(64 * 1024)), `$${64 * 1024}\r\n${'q'.repeat(64 * 1024)}\r\n`);
});

test('a request of 1,024 elements of any legal size is answered, not a protocol error', async () => {
  const c = await connect();
  // 1,024 x 200 bytes, and 1,024 x 64 KiB (64 MiB, sent in pieces): neither breaks a protocol limit.
  c.send(resp(...Array.from({ length: 1024 }, () => 'a'.repeat(200))) + 'PING\r\n');
  await c.expect(`-ERR Unknown command '${'a'.repeat(128)}...'. ${SUPPORTED}\r\n+PONG\r\n`);
  c.reset();
  const big = `$${64 * 1024}\r\n${'g'.repeat(64 * 1024)}\r\n`;
  c.send('*1024\r\n$6\r\nGETSEQ\r\n');
  for (let i = 1; i < 1024; i++) c.send(big);
  c.send('GETSEQ\r\n');
  await c.expect(`-ERR wrong number of arguments for 'GETSEQ'\r\n:1\r\n`, 30_000);
});

test('1,000 pipelined commands in one write are answered in order', async () => {
  const c = await connect();
  let request = '';
  let expected = '';
  for (let i = 1; i <= 500; i++) {
    request += 'GETSEQ pipe\r\n' + resp('CURRENT', 'pipe');
    expected += `:${i}\r\n:${i + 1}\r\n`;
  }
  c.send(request);
  await c.expect(expected);
});

test('exact 64-bit values up to 2^63-1, then "sequence exhausted" while the server serves on', async () => {
  const s = await startServerProcess(['--in-memory', `--initial=${MAX - 1n}`]);
  try {
    const c = await connect(s);
    c.send('GETSEQ\r\nCURRENT\r\nGETSEQ\r\nGETSEQ\r\nCURRENT\r\nGETSEQ_BATCH 1\r\nGETSEQ other\r\nPING\r\n');
    await c.expect(
      `:${MAX - 1n}\r\n:${MAX}\r\n:${MAX}\r\n-ERR sequence exhausted\r\n-ERR sequence exhausted\r\n-ERR sequence exhausted\r\n:${MAX - 1n}\r\n+PONG\r\n`,
    );
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
  }
});

test('a batch that does not fit below 2^63 issues nothing', async () => {
  const s = await startServerProcess(['--in-memory', `--initial=${MAX - 9n}`]);
  try {
    const c = await connect(s);
    c.send('GETSEQ_BATCH 11\r\nCURRENT\r\nGETSEQ_BATCH 10\r\nGETSEQ\r\n');
    await c.expect(`-ERR sequence exhausted\r\n:${MAX - 9n}\r\n:${MAX - 9n}\r\n-ERR sequence exhausted\r\n`);
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
  }
});

test('over --max-connections: the new connection is refused, open ones are unaffected', async () => {
  const s = await startServerProcess(['--in-memory', '--max-connections=2']);
  try {
    const a = await connect(s);
    const b = await connect(s);
    a.send('PING\r\n');
    await a.expect('+PONG\r\n');
    b.send('PING\r\n');
    await b.expect('+PONG\r\n');
    const refused = await connect(s);
    await refused.until((t) => t.length > 0);
    assert.equal(refused.text, '-ERR max number of clients reached\r\n');
    await refused.waitClosed();
    a.reset();
    a.send('GETSEQ\r\n');
    await a.expect(':1\r\n');
    // A slot freed by a closing client is usable again.
    b.close();
    const deadline = Date.now() + 5000;
    for (;;) {
      const c = await connect(s);
      c.send('GETSEQ\r\n');
      await c.until((t) => t.length > 0 || c.closed);
      if (c.text === ':2\r\n') break;
      assert.ok(Date.now() < deadline, 'the freed slot never became usable');
      c.close();
    }
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
  }
});

test('a client that half-closes still gets every reply', async () => {
  const c = await connect();
  c.socket.end('GETSEQ halfclose\r\nGETSEQ halfclose\r\n');
  await c.waitClosed();
  assert.equal(c.text, ':1\r\n:2\r\n');
});
