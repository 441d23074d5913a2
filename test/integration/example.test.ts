/**
 * The example runs as a user would run it, against a real server, importing
 * the package by name: the public API and its type declarations work from outside.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ROOT, startServerProcess } from '../helpers/server-process.js';

test('examples/kv-transaction-ids.ts runs against a local server', async () => {
  const server = await startServerProcess(['--in-memory']);
  try {
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'examples/kv-transaction-ids.ts')], {
        cwd: ROOT,
        env: { ...process.env, SEQUENCER_SERVER: server.address },
      });
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the example did not finish in 30 s; ${out} ${err}`));
      }, 30_000);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve({ code: c, stdout: out, stderr: err });
      });
    });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^committed txn 1, then txn 2; user:1 was last written by txn 2$/m);
    assert.match(stdout, /^committed 10,000 transactions in \d+ ms with cached ids; the last id was 10000$/m);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
