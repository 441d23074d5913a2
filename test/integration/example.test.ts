/**
 * The example runs as a user would run it, against a real server, importing
 * the package by name: the public API and its type declarations work from outside.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, runProgram, startServerProcess } from '../helpers/server-process.js';

test('examples/kv-transaction-ids.ts runs against a local server', async () => {
  const server = await startServerProcess(['--in-memory']);
  try {
    const { code, stdout, stderr } = await runProgram(process.execPath, ['--import', 'tsx', path.join(ROOT, 'examples/kv-transaction-ids.ts')], {
      cwd: ROOT,
      env: { SEQUENCER_SERVER: server.address },
      timeoutMs: 30_000,
    });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^committed txn 1, then txn 2; user:1 was last written by txn 2$/m);
    assert.match(stdout, /^committed 10,000 transactions in \d+ ms with cached ids; the last id was 10000$/m);
    assert.equal(await server.stop(), 0);
  } finally {
    await server.stop();
  }
});
