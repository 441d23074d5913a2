/**
 * A failed accept that Node.js reports (ENOMEM, ENOBUFS; libuv handles EMFILE and ENFILE unreported) reaches a
 * listening server as an 'error' event. It must cost that one client, never
 * the process: counted, logged, and the server serves on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { startServer } from '../../src/server/run.js';
import { parseConfig } from '../../src/config.js';
import { WireClient } from '../helpers/wire.js';
import { parseMetrics, request } from '../helpers/http.js';
import { freePort } from '../helpers/ports.js';
import { captureLog } from '../helpers/log-capture.js';

test('a failed accept on the client port is counted, logged and survived', async () => {
  const { log, lines } = captureLog();
  const metricsPort = await freePort();
  const running = await startServer(parseConfig(['--host=127.0.0.1', '--port=0', `--metrics-port=${metricsPort}`, '--in-memory']), { log });
  try {
    // What Node emits when libuv reports a failed accept; made to happen on demand
    // here, since running a real process out of descriptors is not repeatable.
    const listener = (running.server as unknown as { listeners: net.Server[] }).listeners[0]!;
    listener.emit('error', Object.assign(new Error('accept ENOBUFS'), { code: 'ENOBUFS', syscall: 'accept' }));
    assert.equal(running.server.counters.acceptErrors, 1);
    const logged = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('failed to accept a client connection'));
    assert.deepEqual(logged.map((l) => [l.level, l.count, l.error]), [[40, 1, 'accept ENOBUFS']]);
    const m = parseMetrics((await request(`http://127.0.0.1:${metricsPort}/metrics`)).body);
    assert.equal(m.get('dolmeangi_accept_errors_total'), 1);
    const c = await WireClient.connect(running.port);
    try {
      await c.exchange('GETSEQ\r\n', ':1\r\n');
    } finally {
      c.close();
    }
    assert.equal(await running.close(), true);
  } finally {
    await running.close();
  }
});
