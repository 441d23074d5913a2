/**
 * AUTH byte for byte against real server processes: the password from
 * --requirepass, from SEQUENCER_REQUIREPASS and from --requirepass-file.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCli, startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { WireClient, resp } from '../helpers/wire.js';

const NOAUTH = '-NOAUTH Authentication required.\r\n';
const WRONGPASS = '-WRONGPASS invalid password\r\n';
const PASSWORD = 'correct-horse-battery';
const FILE_PASSWORD = 'from a file: with spaces';

let dir: string;
const servers: ServerProcess[] = [];
const clients: WireClient[] = [];

async function start(args: string[], env?: NodeJS.ProcessEnv): Promise<ServerProcess> {
  const s = await startServerProcess(['--in-memory', ...args], env === undefined ? {} : { env });
  servers.push(s);
  return s;
}

async function connect(s: ServerProcess): Promise<WireClient> {
  const c = await WireClient.connect(s.port);
  clients.push(c);
  return c;
}

/** Everything but PING, AUTH and QUIT is refused before AUTH, unknown commands included (but HELLO). */
async function checkLockedOut(c: WireClient): Promise<void> {
  await c.exchange('PING\r\n', '+PONG\r\n');
  await c.exchange(resp('PING'), '+PONG\r\n');
  for (const req of ['GETSEQ\r\n', 'CURRENT\r\n', 'GETSEQ_BATCH 10\r\n', 'INFO\r\n', 'FOOBAR\r\n', 'getseq lower\r\n']) {
    await c.exchange(req, NOAUTH);
  }
  await c.exchange(resp('GETSEQ', 'x') + resp('NOSUCHCOMMAND', 'a', 'b'), NOAUTH + NOAUTH);
  // Wrong arity is not a way to learn anything before AUTH either.
  await c.exchange('GETSEQ a b c d\r\n', NOAUTH);
  await c.exchange('MULTI\r\nCLIENT SETNAME x\r\n', NOAUTH + NOAUTH);
  // But HELLO is unknown even here (with no list of commands): a Redis 6 client (ioredis) sends
  // it with the password, and only that answer makes it fall back to AUTH.
  await c.exchange(resp('HELLO', '3', 'AUTH', 'default', 'pw') + 'hello\r\n', "-ERR Unknown command 'HELLO'. Authenticate with AUTH\r\n-ERR Unknown command 'hello'. Authenticate with AUTH\r\n");
}

/** The whole story on one connection: locked out, wrong password, right password, served. */
async function checkAuthFlow(s: ServerProcess, password: string, viaResp: boolean): Promise<void> {
  const c = await connect(s);
  await checkLockedOut(c);
  const auth = (pw: string) => (viaResp ? resp('AUTH', pw) : `AUTH ${pw}\r\n`);
  await c.exchange(auth('wrong-password'), WRONGPASS);
  await c.exchange(auth(password.slice(0, -1)), WRONGPASS);
  await c.exchange(auth(`${password}x`), WRONGPASS);
  await c.exchange('GETSEQ\r\n', NOAUTH);
  await c.exchange(auth(password), '+OK\r\n');
  await c.exchange('GETSEQ\r\nGETSEQ\r\nCURRENT\r\n', ':1\r\n:2\r\n:3\r\n');
  await c.exchange(resp('GETSEQ_BATCH', '10'), ':3\r\n');
  await c.exchange('PING\r\n', '+PONG\r\n');
}

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'dolmeangi-auth-'));
});

after(async () => {
  for (const c of clients) c.close();
  const codes = await Promise.all(servers.map((s) => s.stop()));
  await rm(dir, { recursive: true, force: true });
  assert.deepEqual(codes, servers.map(() => 0), 'every server stops cleanly');
});

test('--requirepass: only PING, AUTH and QUIT before AUTH; WRONGPASS; then +OK and service', async () => {
  const s = await start([`--requirepass=${PASSWORD}`]);
  await checkAuthFlow(s, PASSWORD, false);
  assert.equal(s.logs.find((l) => l.msg === 'listening')?.auth, true);

  // AUTH belongs to one connection, not to the client's address.
  const other = await connect(s);
  await other.exchange('GETSEQ\r\n', NOAUTH);

  // The Redis 6 form, AUTH <user> <password>: only the user "default" exists.
  const c = await connect(s);
  await c.exchange(resp('AUTH', 'admin', PASSWORD), WRONGPASS);
  await c.exchange(`AUTH default ${PASSWORD}\r\n`, '+OK\r\n');
  await c.exchange('CURRENT\r\n', ':13\r\n');

  const arity = await connect(s);
  await arity.exchange('AUTH\r\n', "-ERR wrong number of arguments for 'AUTH'\r\n");
  await arity.exchange('AUTH default pw extra\r\n', "-ERR wrong number of arguments for 'AUTH'\r\n");
  await arity.exchange('auth ' + PASSWORD + '\r\n', '+OK\r\n');
});

test('QUIT before AUTH answers +OK and closes', async () => {
  const s = await start([`--requirepass=${PASSWORD}`]);
  const c = await connect(s);
  await c.exchange('QUIT\r\nGETSEQ\r\n*x\r\n', '+OK\r\n');
  await c.waitClosed();
  assert.equal(c.text, '+OK\r\n');
});

test('SEQUENCER_REQUIREPASS from the environment, over RESP', async () => {
  const s = await start([], { SEQUENCER_REQUIREPASS: PASSWORD });
  await checkAuthFlow(s, PASSWORD, true);
});

test('--requirepass-file: the trailing newline is stripped and the password stays out of the process listing', async () => {
  const file = path.join(dir, 'password');
  await writeFile(file, `${FILE_PASSWORD}\n`, { mode: 0o600 });
  const s = await start([`--requirepass-file=${file}`]);
  // The password has spaces, so only RESP can carry it as one word.
  await checkAuthFlow(s, FILE_PASSWORD, true);

  const c = await connect(s);
  await c.exchange(resp('AUTH', `${FILE_PASSWORD}\n`), WRONGPASS);
  // Inline, the words split at spaces: "from" is taken for a user name.
  await c.exchange(`AUTH ${FILE_PASSWORD}\r\n`, "-ERR wrong number of arguments for 'AUTH'\r\n");
  await c.exchange('AUTH a:b with\r\n', WRONGPASS);

  const cmdline = (await readFile(`/proc/${s.pid}/cmdline`)).toString('latin1');
  assert.ok(cmdline.includes('--requirepass-file='), `the listing is the server's: ${cmdline}`);
  assert.ok(!cmdline.includes(FILE_PASSWORD), 'the password is not in /proc/<pid>/cmdline');
  assert.ok(!cmdline.includes('from a file'), 'no piece of it either');
});

test('a password no client could send (over 65,536 bytes) stops start-up; one of 65,536 bytes works', async () => {
  const long = path.join(dir, 'long');
  await writeFile(long, `${'p'.repeat(65_537)}\n`);
  const r = await runCli(['sequencer', '--in-memory', '--port=0', `--requirepass-file=${long}`]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^dolmeangi: --requirepass-file: the password is 65537 bytes; clients can send at most 65536 in AUTH\n$/);
  const longest = path.join(dir, 'longest');
  await writeFile(longest, 'p'.repeat(65_536));
  const s = await start([`--requirepass-file=${longest}`]);
  const c = await connect(s);
  await c.exchange(`${resp('AUTH', 'p'.repeat(65_536))}GETSEQ\r\n`, '+OK\r\n:1\r\n');
});

test('a file with CRLF, and a password with no newline at all', async () => {
  const crlf = path.join(dir, 'crlf');
  await writeFile(crlf, 'windows-pass\r\n');
  const bare = path.join(dir, 'bare');
  await writeFile(bare, 'bare-pass');
  const a = await start([`--requirepass-file=${crlf}`]);
  const b = await start([`--requirepass-file=${bare}`]);
  const ca = await connect(a);
  await ca.exchange(resp('AUTH', 'windows-pass\r'), WRONGPASS);
  await ca.exchange('AUTH windows-pass\r\n', '+OK\r\n');
  const cb = await connect(b);
  await cb.exchange('AUTH bare-pass\r\nGETSEQ\r\n', '+OK\r\n:1\r\n');
});

test('--requirepass on the command line is visible in the process listing (why the file exists)', async () => {
  const s = await start([`--requirepass=${PASSWORD}`]);
  const cmdline = (await readFile(`/proc/${s.pid}/cmdline`)).toString('latin1');
  assert.ok(cmdline.includes(PASSWORD));
});

test('without a password everything is served and AUTH is an error', async () => {
  const s = await start([]);
  const c = await connect(s);
  await c.exchange('GETSEQ\r\n', ':1\r\n');
  await c.exchange('AUTH anything\r\n', '-ERR AUTH called, but this server has no password (--requirepass is not set)\r\n');
  await c.exchange(resp('AUTH', 'default', 'anything'), '-ERR AUTH called, but this server has no password (--requirepass is not set)\r\n');
  await c.exchange('GETSEQ\r\n', ':2\r\n');
});

test('a stream of wrong passwords is answered one by one and never lets a command through', async () => {
  const s = await start([`--requirepass=${PASSWORD}`]);
  const c = await connect(s);
  let request = '';
  let expected = '';
  for (let i = 0; i < 500; i++) {
    request += `AUTH guess-${i}\r\nGETSEQ\r\n`;
    expected += WRONGPASS + NOAUTH;
  }
  await c.exchange(request, expected);
  await c.exchange(`AUTH ${PASSWORD}\r\nGETSEQ\r\n`, '+OK\r\n:1\r\n');
});

/** AUTH with the password as exactly these bytes, as a RESP bulk string. */
const authBytes = (password: Buffer): Buffer =>
  Buffer.concat([Buffer.from(`*2\r\n$4\r\nAUTH\r\n$${password.length}\r\n`), password, Buffer.from('\r\n')]);

test('a non-ASCII password matches the UTF-8 bytes a client sends', async () => {
  const password = 'pässwörd-밀번호';
  assert.notEqual(Buffer.byteLength(password, 'utf8'), password.length);
  const s = await start([`--requirepass=${password}`]);
  const c = await connect(s);
  c.reset();
  c.send(Buffer.concat([authBytes(Buffer.from(password, 'utf8')), Buffer.from('GETSEQ\r\n')]));
  await c.expect('+OK\r\n:1\r\n');
  // A password whose characters all fit latin1, sent as latin1 bytes rather than UTF-8: the
  // same characters, other bytes, so not the password.
  const latin = 'pässwörd';
  const t = await start([`--requirepass=${latin}`]);
  const d = await connect(t);
  await d.exchange(authBytes(Buffer.from(latin, 'latin1')), WRONGPASS);
  await d.exchange(authBytes(Buffer.from(latin, 'utf8')), '+OK\r\n');
});
