/**
 * A group whose members also serve TLS: a follower's TLS port sends clients to
 * the leader's TLS port, not to its plain one, where a TLS client could not
 * connect (and which docs/security.md suggests firewalling).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import tls from 'node:tls';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { startGroup, type SequencerGroup } from '../helpers/group.js';
import { makeCerts, type TestCerts } from '../helpers/certs.js';
import { freePorts } from '../helpers/ports.js';
import { WireClient, ask } from '../helpers/wire.js';
import { runCli } from '../helpers/server-process.js';
import { SequencerClient } from '../../src/index.js';

let etcd: EtcdCluster;
let group: SequencerGroup;
let certs: TestCerts;
let tlsPorts: number[];
const sockets: tls.TLSSocket[] = [];

before(async () => {
  certs = await makeCerts();
  etcd = await startEtcdCluster({ size: 1 });
  tlsPorts = await freePorts(2);
  group = await startGroup(etcd, {
    size: 2,
    prefix: '/dolmeangi-tls-test/',
    nodeArgs: (i) => [`--tls-port=${tlsPorts[i]}`, `--tls-cert=${certs.serverCert}`, `--tls-key=${certs.serverKey}`],
  });
});

after(async () => {
  for (const s of sockets) s.destroy();
  await group?.close();
  await etcd?.close();
  await certs?.remove();
});

function tlsConnect(port: number): Promise<WireClient> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(certs.caCert), servername: 'localhost' });
    sockets.push(socket);
    socket.once('secureConnect', () => resolve(WireClient.wrap(socket)));
    socket.once('error', reject);
  });
}

test("a follower's TLS port names the leader's TLS address; its plain port, the plain one", async () => {
  const leader = await group.waitForLeader();
  const follower = 1 - leader;
  const secure = await tlsConnect(tlsPorts[follower]!);
  await secure.exchange('GETSEQ\r\nCURRENT\r\n', `-NOTLEADER 127.0.0.1:${tlsPorts[leader]}\r\n`.repeat(2));
  secure.close();
  assert.equal(await ask(group.nodes[follower]!.port, 'GETSEQ\r\n'), `-NOTLEADER ${group.nodes[leader]!.address}\r\n`);
  const info = await ask(group.nodes[follower]!.port, 'INFO\r\n');
  assert.match(info, new RegExp(`\\r\\nadvertise_tls:127\\.0\\.0\\.1:${tlsPorts[follower]}\\r\\n`), 'the default: the advertised host and --tls-port');
  assert.match(info, new RegExp(`\\r\\nleader_tls:127\\.0\\.0\\.1:${tlsPorts[leader]}\\r\\n`));
});

test('the client library over TLS, given only a follower, follows the redirect to the leader and is served', async () => {
  const leader = await group.waitForLeader();
  const follower = 1 - leader;
  const c = new SequencerClient({ servers: [`localhost:${tlsPorts[follower]}`], tls: { ca: fs.readFileSync(certs.caCert) }, requestTimeoutMs: 5000 });
  try {
    const first = await c.getNextSequence();
    assert.equal(await c.getNextSequence(), first + 1n);
  } finally {
    await c.close();
  }
});

test('a member with --tls-port=0 must be told its TLS address: it cannot be known before the port is bound', async () => {
  const r = await runCli([
    'sequencer',
    `--etcd=${etcd.endpoints[0]}`,
    '--etcd-prefix=/dolmeangi-tls-test-unused/',
    '--host=127.0.0.1',
    '--port=0',
    '--advertise=127.0.0.1:1',
    '--metrics-port=0',
    '--tls-port=0',
    `--tls-cert=${certs.serverCert}`,
    `--tls-key=${certs.serverKey}`,
  ]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr, 'dolmeangi: --advertise-tls: is needed in group mode with --tls-port=0: TLS clients must be told where the leader is\n');
});
