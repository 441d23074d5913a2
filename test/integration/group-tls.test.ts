/**
 * A group whose members also serve TLS: a follower's TLS port sends clients to
 * the leader's TLS port, not to its plain one, where a TLS client could not
 * connect (and which docs/security.md suggests firewalling).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { startGroup, type SequencerGroup } from '../helpers/group.js';
import { makeCerts, type TestCerts } from '../helpers/certs.js';
import { WireClient, ask } from '../helpers/wire.js';
import { runCli } from '../helpers/server-process.js';
import { waitFor } from '../helpers/wait.js';
import { SequencerClient } from '../../src/index.js';

let etcd: EtcdCluster;
let group: SequencerGroup;
let certs: TestCerts;
const peers: WireClient[] = [];

before(async () => {
  certs = await makeCerts();
  etcd = await startEtcdCluster({ size: 1 });
  group = await startGroup(etcd, {
    size: 2,
    prefix: '/dolmeangi-tls-test/',
    tls: { cert: certs.serverCert, key: certs.serverKey },
  });
});

after(async () => {
  for (const p of peers) p.close();
  await group?.close();
  await etcd?.close();
  await certs?.remove();
});

function tlsPort(i: number): number {
  return group.nodes[i]!.tlsPort!;
}

async function tlsConnect(port: number): Promise<WireClient> {
  const peer = await WireClient.connectTls(port, { ca: fs.readFileSync(certs.caCert) });
  peers.push(peer);
  return peer;
}

/** The serving leader's index, once the follower has learned of it too (its watch may lag the leader's start). */
async function leaderKnownToFollower(): Promise<number> {
  const leader = await group.waitForLeader();
  await waitFor(
    async () => (await ask(group.nodes[1 - leader]!.port, 'INFO\r\n')).includes(`\r\nleader_tls:127.0.0.1:${tlsPort(leader)}\r\n`),
    'the follower to know the leader',
  );
  return leader;
}

test("a follower's TLS port names the leader's TLS address; its plain port, the plain one", async () => {
  const leader = await leaderKnownToFollower();
  const follower = 1 - leader;
  const secure = await tlsConnect(tlsPort(follower));
  await secure.exchange('GETSEQ\r\nCURRENT\r\n', `-NOTLEADER 127.0.0.1:${tlsPort(leader)}\r\n`.repeat(2));
  secure.close();
  assert.equal(await ask(group.nodes[follower]!.port, 'GETSEQ\r\n'), `-NOTLEADER ${group.nodes[leader]!.address}\r\n`);
  const info = await ask(group.nodes[follower]!.port, 'INFO\r\n');
  assert.match(info, new RegExp(`\\r\\nadvertise_tls:127\\.0\\.0\\.1:${tlsPort(follower)}\\r\\n`), 'the default: the advertised host and --tls-port');
  assert.match(info, new RegExp(`\\r\\nleader_tls:127\\.0\\.0\\.1:${tlsPort(leader)}\\r\\n`));
});

test('the client library over TLS, given only a follower, follows the redirect to the leader and is served', async () => {
  const leader = await leaderKnownToFollower();
  const follower = 1 - leader;
  const c = new SequencerClient({ servers: [`localhost:${tlsPort(follower)}`], tls: { ca: fs.readFileSync(certs.caCert) }, requestTimeoutMs: 5000 });
  try {
    const first = await c.getNextSequence();
    assert.equal(await c.getNextSequence(), first + 1n);
  } finally {
    await c.close();
  }
});

test('--advertise-tls is needed with --tls-port=0, and may not name the plain port', async () => {
  const args = [
    'sequencer',
    `--etcd=${etcd.endpoints[0]}`,
    '--etcd-prefix=/dolmeangi-tls-test-unused/',
    '--host=127.0.0.1',
    '--port=0',
    '--advertise=127.0.0.1:1',
    '--metrics-port=0',
    `--tls-cert=${certs.serverCert}`,
    `--tls-key=${certs.serverKey}`,
  ];
  // It cannot be known before the port is bound, and the election key is written before that.
  const zero = await runCli([...args, '--tls-port=0']);
  assert.equal(zero.code, 2, zero.stderr);
  assert.equal(zero.stderr, 'dolmeangi: --advertise-tls: is needed in group mode with --tls-port=0: TLS clients must be told where the leader is\n');
  const same = await runCli([...args, '--tls-port=0', '--advertise-tls=127.0.0.1:1']);
  assert.equal(same.code, 2, same.stderr);
  assert.equal(same.stderr, "dolmeangi: --advertise-tls: is the plain port's address too (127.0.0.1:1): name the TLS port\n");
});
