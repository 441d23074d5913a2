/** The CLI client commands, run in process against mock servers. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { runClientCommand, type ClientCommand } from '../../src/cli/client-commands.js';
import { counterScript, startMockServer, type MockServer } from '../helpers/mock-server.js';
import { freePort } from '../helpers/ports.js';

const servers: MockServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function mock(script = counterScript()): Promise<MockServer> {
  const server = await startMockServer(script);
  servers.push(server);
  return server;
}

async function run(command: ClientCommand, argv: string[], env: NodeJS.ProcessEnv = {}) {
  let stdout = '';
  let stderr = '';
  const code = await runClientCommand(command, argv, {
    out: (s) => (stdout += s),
    err: (s) => (stderr += s),
    env,
  });
  return { code, stdout, stderr };
}

test('getseq, current, ping and info print their answers', async () => {
  const server = await mock(counterScript(41n));
  const s = ['--server', server.address];
  assert.deepEqual(await run('getseq', s), { code: 0, stdout: '41\n', stderr: '' });
  assert.deepEqual(await run('current', s), { code: 0, stdout: '42\n', stderr: '' });
  assert.deepEqual(await run('ping', s), { code: 0, stdout: 'PONG\n', stderr: '' });
  const info = await run('info', s);
  assert.equal(info.code, 0);
  assert.match(info.stdout, /^# Server\nrole:standalone\n/);
  assert.doesNotMatch(info.stdout, /\r/);
});

test('getseq --count takes a batch and prints its first number; names are passed on', async () => {
  const server = await mock(counterScript(1n));
  assert.deepEqual(await run('getseq', ['orders', '--count', '10', `--server=${server.address}`]), { code: 0, stdout: '1\n', stderr: '' });
  assert.deepEqual(await run('current', ['orders', '--server', server.address]), { code: 0, stdout: '11\n', stderr: '' });
  assert.deepEqual(server.requests, [['GETSEQ_BATCH', '10', 'orders'], ['CURRENT', 'orders']]);
});

test('SEQUENCER_SERVER and SEQUENCER_PASSWORD; a server list skips a dead first entry', async () => {
  const server = await mock();
  // Free a moment ago, so nothing listens there.
  const dead = await freePort();
  const result = await run('getseq', [], { SEQUENCER_SERVER: `127.0.0.1:${dead},${server.address}`, SEQUENCER_PASSWORD: 'pw' });
  assert.deepEqual(result, { code: 0, stdout: '1\n', stderr: '' });
  assert.deepEqual(server.requests[0], ['AUTH', 'pw']);
});

test('a server error: exit 1 and one line on stderr', async () => {
  const server = await mock((_words, connection) => connection.send('-ERR sequence exhausted\r\n'));
  const result = await run('getseq', ['--server', server.address]);
  assert.equal(result.code, 1);
  assert.equal(result.stdout, '');
  assert.match(result.stderr, /^dolmeangi: server replied: ERR sequence exhausted: .*\n$/);
  assert.equal(result.stderr.split('\n').length, 2);
});

test('a listed server that accepts and never answers leaves time for the next one, with a password too', async () => {
  const hung = await mock(() => {});
  const good = await mock(counterScript(7n));
  for (const extra of [[], ['--password', 'pw']]) {
    for (const command of ['current', 'ping', 'info'] as const) {
      const result = await run(command, ['--server', `${hung.address},${good.address}`, '--timeout', '2000', ...extra]);
      assert.equal(result.code, 0, `${command} ${extra.join(' ')}: ${result.stderr}`);
    }
  }
  // With a password nothing is sent before AUTH, so a getseq moves on too; without one it may have taken a number.
  assert.equal((await run('getseq', ['--server', `${hung.address},${good.address}`, '--timeout', '2000', '--password', 'pw'])).code, 0);
  const timedOut = await run('getseq', ['--server', `${hung.address},${good.address}`, '--timeout', '1000']);
  assert.equal(timedOut.code, 1);
  // Advice in the command line's terms, not the library's option.
  assert.match(timedOut.stderr, /raise --timeout/);
  assert.doesNotMatch(timedOut.stderr, /requestTimeoutMs/);
});

test('a server answering NOTLEADER (no leader known, or a dead one named) leaves the next one listed its turn', async () => {
  const good = await mock(counterScript(12n));
  const dead = await freePort();
  for (const reply of ['-NOTLEADER\r\n', `-NOTLEADER 127.0.0.1:${dead}\r\n`]) {
    const follower = await mock((_words, connection) => connection.send(reply));
    for (const command of ['getseq', 'current'] as const) {
      const result = await run(command, ['--server', `${follower.address},${good.address}`, '--timeout', '2000']);
      assert.equal(result.code, 0, `${command} after ${JSON.stringify(reply)}: ${result.stderr}`);
    }
  }
});

test('servers that refuse at once leave their share of --timeout to the next one', async () => {
  const refused = await Promise.all([freePort(), freePort(), freePort()]);
  const count = counterScript(3n);
  // Slow to accept the password: more than a quarter of the timeout.
  const slow = await mock((words, connection) => (words[0] === 'AUTH' ? setTimeout(() => connection.send('+OK\r\n'), 400) : count(words, connection)));
  const list = [...refused.map((p) => `127.0.0.1:${p}`), slow.address].join(',');
  assert.deepEqual(await run('getseq', ['--server', list, '--timeout', '1000', '--password', 'pw']), { code: 0, stdout: '3\n', stderr: '' });
});

test('a full server: exit 1 after one attempt, not a reconnect loop until the timeout', async () => {
  const full = await mock((_words, connection) => connection.socket.end('-ERR max number of clients reached\r\n'));
  const result = await run('ping', ['--server', full.address, '--timeout', '3000']);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /max number of clients reached/);
  assert.equal(full.accepted, 1);
});

test('no server answering: exit 1 at once', async () => {
  // Free a moment ago, so nothing listens there.
  const dead = await freePort();
  const started = performance.now();
  const result = await run('ping', ['--server', `127.0.0.1:${dead}`]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^dolmeangi: no server could be reached in time \(tried 127\.0\.0\.1:\d+\): .*ECONNREFUSED.*these addresses\.\n$/);
  assert.ok(performance.now() - started < 2000);
});

test('bad usage: exit 2 with a message, nothing sent', async () => {
  const cases: Array<[ClientCommand, string[], RegExp]> = [
    ['getseq', ['--bogus'], /bogus/],
    ['getseq', ['a', 'b'], /unexpected argument 'b'/],
    ['info', ['x'], /unexpected argument 'x'/],
    ['getseq', ['--count', '0'], /--count/],
    ['getseq', ['--count', 'ten'], /--count/],
    ['current', ['--count', '5'], /--count applies to getseq only/],
    ['ping', ['--server', 'host:99999'], /--server/],
    ['ping', ['--timeout', '-5'], /--timeout/],
    ['ping', ['--tls-ca', '/nonexistent/ca.pem'], /--tls-ca/],
    ['ping', ['--tls-cert', '/nonexistent/c.pem'], /--tls-cert/],
    ['getseq', ['--count', '9223372036854775808'], /--count takes a whole number from 1 to 9223372036854775807/],
    ['getseq', ['orders/eu'], /invalid sequence name 'orders\/eu': use 1-64 characters/],
    ['current', ['x'.repeat(65)], /invalid sequence name 'x{64}\.\.\.'/],
  ];
  for (const [command, argv, message] of cases) {
    const result = await run(command, argv);
    assert.equal(result.code, 2, `${command} ${argv.join(' ')}`);
    assert.match(result.stderr, /^dolmeangi: /);
    assert.match(result.stderr, message);
  }
});

test('--help prints usage and exits 0', async () => {
  const result = await run('getseq', ['--help']);
  assert.equal(result.code, 0);
  assert.match(result.stdout, /Usage: dolmeangi getseq \[name\] \[--count n\]/);
  assert.match(result.stdout, /--server/);
});
