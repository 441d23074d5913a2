/**
 * The command line: bad values exit 2 with one line naming the option; --help
 * lists every option; environment variables work and flags win.
 */
import { test } from 'node:test';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { CLI, runCli, runProgram, startServerProcess } from '../helpers/server-process.js';
import { OPTIONS, parseConfig } from '../../src/config.js';
import { WireClient } from '../helpers/wire.js';
import { makeCerts } from '../helpers/certs.js';

const bad: Array<[string[], RegExp]> = [
  [['--port=abc'], /^dolmeangi: --port: expected an integer from 0 to 65535, got 'abc'\n$/],
  [['--port', '70000'], /^dolmeangi: --port: expected an integer from 0 to 65535, got '70000'\n$/],
  [['--initial=-1'], /^dolmeangi: --initial: expected an integer from 0 to 9223372036854775807, got '-1'\n$/],
  [['--initial=9223372036854775808'], /^dolmeangi: --initial: .*got '9223372036854775808'\n$/],
  [['--max-connections=0'], /^dolmeangi: --max-connections: expected an integer from 1 /],
  [['--max-batch=x'], /^dolmeangi: --max-batch: /],
  [['--max-sequences=1.5'], /^dolmeangi: --max-sequences: /],
  [['--reserve=-3'], /^dolmeangi: --reserve: /],
  [['--metrics-port=65536'], /^dolmeangi: --metrics-port: /],
  [['--log-level=loud'], /^dolmeangi: --log-level: expected one of /],
  [['--no-such-option'], /^dolmeangi: --no-such-option: unknown option; see --help/],
  [['--port'], /^dolmeangi: --port: expected a value/],
  [['--initial', '-1'], /^dolmeangi: --initial: a value that begins with '-' goes after '=': --initial=-1\n$/],
  [['--initial=-1', '--port', '-1'], /^dolmeangi: --port: a value that begins/],
  [['--port', '--reserve=5'], /^dolmeangi: --port: expected a value: --port=<n>\n$/],
  [['--in-memory=yes'], /^dolmeangi: --in-memory: takes no value/],
  [['stray'], /^dolmeangi: 'stray': unexpected argument/],
  [['--port', '18001', '18002'], /^dolmeangi: '18002': unexpected argument/],
  [['--host=999.1.1.1'], /^dolmeangi: --host: expected an IP address or a host name, got '999.1.1.1'\n$/],
  [['--host=bad host'], /^dolmeangi: --host: expected an IP address or a host name/],
  [['--tls-port=0', '--tls-cert=/nonexistent/c.pem', '--tls-key=/nonexistent/k.pem'], /^dolmeangi: --tls-cert: cannot read \/nonexistent\/c.pem/],
  [['--etcd=localhost'], /^dolmeangi: --etcd: expected URLs like/],
  [['--etcd=http://127.0.0.1:2379,http://root:s3cret@127.0.0.1:2380'], /^dolmeangi: --etcd: credentials do not go in the URL: give them with --etcd-username and --etcd-password \(or SEQUENCER_ETCD_PASSWORD\)\n$/],
  [['--tls-port=6380'], /^dolmeangi: --tls-port: needs --tls-cert and --tls-key/],
  [['--advertise-tls=127.0.0.1:10002'], /^dolmeangi: --advertise-tls: names the TLS port of this member, and there is none: give --tls-port too\n$/],
  [['--advertise-tls=nowhere'], /^dolmeangi: --advertise-tls: expected host:port or \[ipv6\]:port, got 'nowhere'\n$/],
  [['--data-dir=/tmp/somewhere'], /^dolmeangi: --data-dir: cannot be combined with --in-memory \(in memory, nothing is stored\); give one of them\n$/],
];

for (const [args, message] of bad) {
  test(`sequencer ${args.join(' ')} exits 2 with one line naming the option`, async () => {
    const r = await runCli(['sequencer', '--in-memory', ...args]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.split('\n').length, 2, 'exactly one line');
    assert.equal(r.stdout, '', 'nothing started, nothing logged');
  });
}

test('unreadable TLS files stop start-up before the data directory is created or a port bound', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-cli-'));
  try {
    const dataDir = path.join(dir, 'data');
    const r = await runCli(['sequencer', `--data-dir=${dataDir}`, '--port=0', '--tls-port=0', `--tls-cert=${dir}/none.pem`, `--tls-key=${dir}/none.pem`]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^dolmeangi: --tls-cert: cannot read /);
    assert.equal(r.stdout, '', 'nothing logged');
    await assert.rejects(stat(dataDir), /ENOENT/, 'the data directory was not created');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('no command: usage on stderr, exit 2', async () => {
  const r = await runCli([]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^Usage: dolmeangi /);
});

test('a client command whose reader stops early exits quietly', async () => {
  const s = await startServerProcess(['--in-memory', '--host=127.0.0.1', '--port=0', '--metrics-port=0']);
  try {
    // `true` exits without reading: the write of INFO's text finds the pipe closed (EPIPE).
    const r = await runProgram('bash', ['-c', `set -o pipefail; node ${JSON.stringify(CLI)} info --server 127.0.0.1:${s.port} | true`]);
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
  } finally {
    await s.stop();
  }
});

test('host names and addresses --host accepts', () => {
  for (const host of ['0.0.0.0', '::', '::1', '127.0.0.1', 'localhost', 'db-1.example.com', 'example.com.', 'x1']) {
    assert.equal(parseConfig(['--host', host], {}).host, host);
  }
});

test('an environment variable with a bad value is named', async () => {
  const r = await runCli(['sequencer', '--in-memory'], { env: { SEQUENCER_PORT: 'nope' } });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^dolmeangi: SEQUENCER_PORT: expected an integer from 0 to 65535, got 'nope'\n$/);
});

test('an option checked against others is named as it was given: by its environment variable when it came from one', () => {
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [[], { SEQUENCER_HOST: '999.1.1.1' }, /^SEQUENCER_HOST: expected an IP address or a host name/],
    [[], { SEQUENCER_TLS_PORT: '6380' }, /^SEQUENCER_TLS_PORT: needs --tls-cert and --tls-key/],
    [[], { SEQUENCER_TLS_CERT: '/tmp/c.pem' }, /^SEQUENCER_TLS_CERT: TLS files were given without --tls-port/],
    [[], { SEQUENCER_TLS_KEY: '/tmp/k.pem' }, /^SEQUENCER_TLS_KEY: TLS files were given/],
    [[], { SEQUENCER_TLS_CA: '/tmp/ca.pem' }, /^SEQUENCER_TLS_CA: TLS files were given/],
    [['--etcd=http://127.0.0.1:2379'], { SEQUENCER_ADVERTISE: 'nowhere' }, /^SEQUENCER_ADVERTISE: expected host:port/],
    [['--etcd=http://127.0.0.1:2379'], { SEQUENCER_ETCD_PREFIX: '/g' }, /^SEQUENCER_ETCD_PREFIX: must end with '\/'/],
    // The flag, when both are given: flags win.
    [['--etcd-prefix=/f', '--etcd=http://127.0.0.1:2379'], { SEQUENCER_ETCD_PREFIX: '/g/' }, /^--etcd-prefix: must end with '\/', got '\/f'/],
  ];
  for (const [args, env, message] of cases) {
    assert.throws(() => parseConfig(args, env), (err: Error) => {
      assert.match(err.message, message);
      return true;
    });
  }
});

test('a TLS file that reads but is not what its option asks for is named by that option (a key that does not go with its certificate: tls.test.ts)', async () => {
  const certs = await makeCerts();
  const dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-cli-'));
  try {
    const garbage = path.join(dir, 'garbage.pem');
    await writeFile(garbage, 'not a PEM file\n');
    const damaged = path.join(dir, 'damaged.pem');
    await writeFile(damaged, `${await readFile(certs.caCert, 'latin1')}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`);
    const pair = [`--tls-cert=${certs.serverCert}`, `--tls-key=${certs.serverKey}`];
    const der = path.join(dir, 'server.der');
    await runProgram('openssl', ['x509', '-in', certs.serverCert, '-outform', 'der', '-out', der]);
    const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
      [[`--tls-cert=${der}`, `--tls-key=${certs.serverKey}`], {}, /^dolmeangi: --tls-cert: .*server\.der holds no PEM certificate .*a DER one converts with openssl x509 -inform der/],
      [[`--tls-cert=${certs.serverCert}`, `--tls-key=${garbage}`], {}, /^dolmeangi: --tls-key: .*garbage\.pem holds no usable PEM private key/],
      [[`--tls-cert=${certs.serverKey}`, `--tls-key=${certs.serverKey}`], {}, /^dolmeangi: --tls-cert: .* holds no PEM certificate \("-----BEGIN CERTIFICATE-----"\); it holds a PRIVATE KEY\n$/],
      // OpenSSL itself takes these two without a word; every client would then be refused.
      [pair, { SEQUENCER_TLS_CA: garbage }, /^dolmeangi: SEQUENCER_TLS_CA: .*garbage\.pem holds no PEM certificate: a CA file is one or more/],
      [[...pair, `--tls-ca=${certs.serverKey}`], {}, /^dolmeangi: --tls-ca: .* holds no PEM certificate/],
      [[...pair, `--tls-ca=${damaged}`], {}, /^dolmeangi: --tls-ca: certificate 2 of 2 in .*damaged\.pem is not usable/],
    ];
    for (const [args, env, message] of cases) {
      const r = await runCli(['sequencer', '--in-memory', '--port=0', '--metrics-port=0', '--tls-port=0', ...args], { env });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
    }
    // The same files, right: it starts (and a CA file of several certificates, one in OpenSSL's trusted form, is taken).
    const trusted = path.join(dir, 'trusted.pem');
    await runProgram('openssl', ['x509', '-in', certs.caCert, '-addtrust', 'clientAuth', '-out', trusted]);
    assert.match(await readFile(trusted, 'latin1'), /^-----BEGIN TRUSTED CERTIFICATE-----/);
    const bundle = path.join(dir, 'bundle.pem');
    await writeFile(bundle, `${await readFile(trusted, 'latin1')}${await readFile(certs.strangerCert, 'latin1')}`);
    const server = await startServerProcess(['--in-memory', '--port=0', '--tls-port=0', ...pair, `--tls-ca=${bundle}`]);
    assert.equal(await server.stop(), 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await certs.remove();
  }
});

test('a file that cannot be read, or an empty password file, is named as it was given: by its environment variable when it came from one', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'dolmeangi-cli-'));
  try {
    const empty = path.join(dir, 'empty');
    await writeFile(empty, '');
    const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
      [[], { SEQUENCER_REQUIREPASS_FILE: `${dir}/none` }, /^dolmeangi: SEQUENCER_REQUIREPASS_FILE: cannot read /],
      [[], { SEQUENCER_REQUIREPASS_FILE: empty }, /^dolmeangi: SEQUENCER_REQUIREPASS_FILE: .* is empty\n$/],
      [[`--requirepass-file=${empty}`], {}, /^dolmeangi: --requirepass-file: .* is empty\n$/],
      [['--tls-port=0', `--tls-key=${dir}/none`], { SEQUENCER_TLS_CERT: `${dir}/none` }, /^dolmeangi: SEQUENCER_TLS_CERT: cannot read /],
      [['--tls-port=0', `--tls-cert=${empty}`], { SEQUENCER_TLS_KEY: `${dir}/none` }, /^dolmeangi: SEQUENCER_TLS_KEY: cannot read /],
      [['--tls-port=0', `--tls-cert=${empty}`, `--tls-key=${empty}`], { SEQUENCER_TLS_CA: `${dir}/none` }, /^dolmeangi: SEQUENCER_TLS_CA: cannot read /],
      [['--tls-port=0', `--tls-key=${empty}`], { SEQUENCER_TLS_CERT: empty }, /^dolmeangi: SEQUENCER_TLS_CERT: .*\/empty holds no PEM certificate \("-----BEGIN CERTIFICATE-----"\); it is empty\n$/],
    ];
    for (const [args, env, message] of cases) {
      const r = await runCli(['sequencer', '--in-memory', '--port=0', '--metrics-port=0', ...args], { env });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('options that contradict each other exit 2 whether each came from a flag or the environment, and the message names where', async () => {
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [['--data-dir=/tmp/somewhere'], { SEQUENCER_IN_MEMORY: '1' }, /^dolmeangi: --data-dir: cannot be combined with SEQUENCER_IN_MEMORY /],
    [['--in-memory'], { SEQUENCER_DATA_DIR: '/tmp/somewhere' }, /^dolmeangi: SEQUENCER_DATA_DIR: cannot be combined with --in-memory /],
    [['--in-memory', '--requirepass=x'], { SEQUENCER_REQUIREPASS_FILE: '/tmp/pw' }, /^dolmeangi: SEQUENCER_REQUIREPASS_FILE: give either --requirepass or SEQUENCER_REQUIREPASS_FILE, not both\n$/],
    [['--etcd=http://127.0.0.1:2379'], { SEQUENCER_IN_MEMORY: '1' }, /^dolmeangi: SEQUENCER_IN_MEMORY: cannot be combined with --etcd \(a group keeps its state in etcd\)\n$/],
    // A data directory that a group would ignore: its numbers would be handed out again.
    [['--etcd=http://127.0.0.1:2379', '--data-dir=/tmp/somewhere'], {}, /^dolmeangi: --data-dir: is not used with --etcd \(a group keeps its state in etcd\): remove it, .*'Moving a single node into a group'\n$/],
    [['--data-dir=/tmp/somewhere'], { SEQUENCER_ETCD: 'http://127.0.0.1:2379' }, /^dolmeangi: --data-dir: is not used with SEQUENCER_ETCD /],
  ];
  for (const [args, env, message] of cases) {
    const r = await runCli(['sequencer', ...args], { env });
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, message);
  }
  // Off in the environment, in memory is no contradiction.
  assert.equal(parseConfig(['--data-dir=/tmp/somewhere'], { SEQUENCER_IN_MEMORY: '0' }).dataDir, '/tmp/somewhere');
});

test('a password from the environment that is too long is named by its variable', async () => {
  const r = await runCli(['sequencer', '--in-memory', '--port=0', '--metrics-port=0'], { env: { SEQUENCER_REQUIREPASS: 'p'.repeat(65_537) } });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^dolmeangi: SEQUENCER_REQUIREPASS: the password is 65537 bytes; clients can send at most 65536 in AUTH\n$/);
});

test('--help lists every option with its environment variable', async () => {
  const r = await runCli(['sequencer', '--help']);
  assert.equal(r.code, 0);
  for (const o of OPTIONS) {
    assert.ok(r.stdout.includes(`--${o.name}`), `--${o.name} in --help`);
    assert.ok(r.stdout.includes(`SEQUENCER_${o.name.toUpperCase().replace(/-/g, '_')}`), `env of --${o.name}`);
  }
  for (const seed of ['--initial', '--port', '--host', '--max-connections']) assert.ok(r.stdout.includes(seed));
});

test('the defaults are the documented ones, written out here rather than read from the option table', () => {
  const c = parseConfig([]);
  assert.deepEqual(
    {
      initial: c.initial,
      port: c.port,
      host: c.host,
      maxConnections: c.maxConnections,
      dataDir: c.dataDir,
      inMemory: c.inMemory,
      reserve: c.reserve,
      maxBatch: c.maxBatch,
      maxSequences: c.maxSequences,
      metricsPort: c.metricsPort,
      timeout: c.timeout,
      clientOutputLimit: c.clientOutputLimit,
      logLevel: c.logLevel,
      leaseTtl: c.leaseTtl,
      etcdPrefix: c.etcdPrefix,
      etcd: c.etcd,
    },
    {
      initial: 1n,
      port: 10001,
      host: '0.0.0.0',
      maxConnections: 1000,
      dataDir: './data',
      inMemory: false,
      reserve: 100000000n,
      maxBatch: 1000000n,
      maxSequences: 10000,
      metricsPort: 10090,
      timeout: 300,
      clientOutputLimit: 8388608,
      logLevel: 'info',
      leaseTtl: 2,
      etcdPrefix: '/dolmeangi/default/',
      etcd: [],
    },
  );
  // Flags come from the environment too.
  assert.equal(parseConfig([], { SEQUENCER_IN_MEMORY: 'true' }).inMemory, true);
});

test('--help names every option of the contract', async () => {
  const r = await runCli(['sequencer', '--help']);
  assert.equal(r.code, 0);
  const contract = ['initial', 'port', 'host', 'max-connections', 'data-dir', 'in-memory', 'reserve', 'max-batch', 'max-sequences',
    'metrics-port', 'requirepass', 'tls-port', 'timeout', 'etcd', 'node-id', 'advertise', 'lease-ttl', 'etcd-prefix'];
  // Not followed by more of a name: `--etcd` must not be found in `--etcd-prefix`.
  for (const name of contract) assert.match(r.stdout, new RegExp(`--${name}(?![\\w-])`), `--${name}`);
});

test('--version prints the package version', async () => {
  const r = await runCli(['sequencer', '--version']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^\d+\.\d+\.\d+\n$/);
});

test('unknown command exits 2', async () => {
  const r = await runCli(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown command 'frobnicate'/);
});

test('options from the environment; flags win over it; --name value form', async () => {
  const s = await startServerProcess(['--in-memory', '--initial', '500'], {
    env: { SEQUENCER_INITIAL: '7', SEQUENCER_MAX_BATCH: '3' },
  });
  const c = await WireClient.connect(s.port);
  try {
    c.send('GETSEQ\r\nGETSEQ_BATCH 4\r\n');
    await c.expect(":500\r\n-ERR invalid count '4': expected an integer from 1 to 3 (--max-batch)\r\n");
    c.close();
    assert.equal(await s.stop(), 0);
  } finally {
    c.close();
    await s.stop();
  }
});

test('SIGINT stops the server with exit status 0', async () => {
  const s = await startServerProcess(['--in-memory']);
  assert.equal(await s.stop('SIGINT'), 0);
});

test('a port already in use stops start-up with a clear message', async () => {
  const s = await startServerProcess(['--in-memory']);
  try {
    const r = await runCli(['sequencer', '--in-memory', '--host=127.0.0.1', `--port=${s.port}`, '--metrics-port=0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot listen for clients on 127.0.0.1:${s.port}: the address is already in use`));
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
  }
});

test('with no options the server listens on 0.0.0.0:10001 (the defaults of the original design)', async () => {
  // --metrics-port=0 only keeps the test off the metrics port; host and port are the CLI's own.
  const s = await startServerProcess(['--in-memory', '--metrics-port=0'], { defaults: true });
  try {
    const line = s.logs.find((l) => l.msg === 'listening')!;
    assert.equal(line.host, '0.0.0.0');
    assert.equal(line.port, 10001);
    const c = await WireClient.connect(10001);
    await c.exchange('GETSEQ\r\n', ':1\r\n');
    c.close();
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
  }
});

test('--timeout is bounded by what a timer holds; --advertise takes host:port or [ipv6]:port', () => {
  assert.equal(parseConfig(['--timeout=2147483']).timeout, 2147483);
  // The longest delay a Node timer holds, in seconds: the idle checks run at a quarter of it,
  // so this keeps them (and any timer of the whole timeout) in range with room to spare.
  assert.throws(() => parseConfig(['--timeout=2147484']), /--timeout/);
  assert.equal(parseConfig(['--advertise=[::1]:7000']).advertise, '[::1]:7000');
  assert.equal(parseConfig(['--advertise=node-a.example:7000']).advertise, 'node-a.example:7000');
  // Unbracketed, the port cannot be told from the address.
  assert.throws(() => parseConfig(['--advertise=::1:7000']), /--advertise.*\[ipv6\]:port/);
  // Clients would default the port; NOTLEADER must name the one this member listens on.
  assert.throws(() => parseConfig(['--advertise=node-a.example']), /--advertise/);
});
