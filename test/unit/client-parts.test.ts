import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatAddress, parseAddress } from '../../src/protocol/address.js';
import { backoffDelay } from '../../src/client/backoff.js';
import { NotLeaderError, ServerError, fromWire } from '../../src/client/errors.js';
import { Fifo } from '../../src/client/fifo.js';
import { parseInfo } from '../../src/client/info.js';
import { encodeCommand } from '../../src/protocol/request-encoder.js';
import { DolmeangiError } from '../../src/errors.js';
import { forCommandLine } from '../../src/cli/client-commands.js';

test('parseAddress: host:port, [ipv6]:port, a bare host, and what it refuses', () => {
  assert.deepEqual(parseAddress('10.0.0.2:10002'), { host: '10.0.0.2', port: 10002 });
  assert.deepEqual(parseAddress('seq.internal'), { host: 'seq.internal', port: 10001 });
  assert.deepEqual(parseAddress('[::1]:7000'), { host: '::1', port: 7000 });
  for (const bad of ['', ':10001', 'host:0', 'host:65536', 'host:port', 'a b:1', '::1:7000']) {
    assert.equal(parseAddress(bad), null, bad);
  }
  // Where the port must be given (--advertise), a bare host is refused.
  assert.equal(parseAddress('seq.internal', null), null);
  assert.deepEqual(parseAddress('[::1]:7000', null), { host: '::1', port: 7000 });
  assert.equal(formatAddress({ host: '::1', port: 7000 }), '[::1]:7000');
  assert.equal(formatAddress({ host: 'localhost', port: 1 }), 'localhost:1');
});

test('parseInfo: fields, sequence lines, comments and blank lines skipped', () => {
  const raw = '# Server\r\nversion:1.2.3\r\nrole:leader\r\n\r\n# Sequences\r\nsequences:2\r\n' +
    'sequence:name=default,current=5,durable_mark=100005,issued=4\r\nsequence:name=mem,current=9,durable_mark=none\r\n' +
    'sequence:broken\r\nnot a field\r\n';
  const info = parseInfo(raw);
  assert.equal(info.raw, raw);
  assert.deepEqual({ ...info.fields }, { version: '1.2.3', role: 'leader', sequences: '2' });
  assert.deepEqual(info.sequences, [
    { name: 'default', current: 5n, durableMark: 100005n },
    { name: 'mem', current: 9n, durableMark: null },
  ]);
});

test('fromWire maps NOTLEADER to NotLeaderError and the rest to ServerError, with advice', () => {
  const redirect = fromWire('NOTLEADER', '10.0.0.3:10001');
  assert.ok(redirect instanceof NotLeaderError && redirect.leader === '10.0.0.3:10001');
  const unknown = fromWire('NOTLEADER', '');
  assert.ok(unknown instanceof NotLeaderError && unknown.leader === null);
  const wrong = fromWire('WRONGPASS', 'invalid password');
  assert.ok(wrong instanceof ServerError && wrong instanceof DolmeangiError);
  assert.equal(wrong.wireCode, 'WRONGPASS');
  assert.equal(wrong.code, 'SERVER');
  assert.match(wrong.message, /--requirepass/);
  assert.match(fromWire('ERR', 'persistence unavailable: disk full').message, /retry later/);
  assert.equal(fromWire('ERR', 'bad count').message, 'server replied: ERR bad count');
});

test('backoffDelay grows exponentially, stays within its bounds, and is jittered', () => {
  const options = { minDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(backoffDelay(0, options, () => 0), 50);
  assert.equal(backoffDelay(0, options, () => 1), 100);
  assert.equal(backoffDelay(2, options, () => 1), 400);
  assert.equal(backoffDelay(50, options, () => 1), 1000);
  assert.equal(backoffDelay(50, options, () => 0), 500);
});

test('encodeCommand writes RESP arrays of bulk strings with byte lengths', () => {
  assert.equal(encodeCommand(['GETSEQ']), '*1\r\n$6\r\nGETSEQ\r\n');
  assert.equal(encodeCommand(['GETSEQ_BATCH', '100', 'orders']), '*3\r\n$12\r\nGETSEQ_BATCH\r\n$3\r\n100\r\n$6\r\norders\r\n');
  assert.equal(encodeCommand(['AUTH', 'pässwörd with spaces']), '*2\r\n$4\r\nAUTH\r\n$22\r\npässwörd with spaces\r\n');
});

test('Fifo keeps order across growth and compaction', () => {
  const q = new Fifo<number>();
  let next = 0;
  let expected = 0;
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 300; i++) q.push(next++);
    for (let i = 0; i < 200; i++) assert.equal(q.shift(), expected++);
  }
  assert.equal(q.length, next - expected);
  assert.deepEqual(q.drain(), Array.from({ length: next - expected }, (_, i) => expected + i));
  assert.equal(q.shift(), undefined);
});

test('the CLI speaks of --timeout where the library names its own options, and drops advice it has no option for', () => {
  assert.equal(
    forCommandLine('no server could be reached in time (tried a:1): could not connect to a:1 within 300 ms: check the address and that the server runs, or raise connectTimeoutMs. Check that a server runs at one of these addresses, or allow more time (requestTimeoutMs).'),
    'no server could be reached in time (tried a:1): could not connect to a:1 within 300 ms: check the address and that the server runs, or raise --timeout. Check that a server runs at one of these addresses, or allow more time (--timeout).',
  );
  assert.equal(forCommandLine('the server is slow, paused or unreachable; check it, or raise requestTimeoutMs.'), 'the server is slow, paused or unreachable; check it, or raise --timeout.');
  assert.equal(
    forCommandLine('the members disagree on who leads, or advertise wrong addresses; retry later, check --advertise, or raise maxRedirects'),
    'the members disagree on who leads, or advertise wrong addresses; retry later, check --advertise',
  );
});
