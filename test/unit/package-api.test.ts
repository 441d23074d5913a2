/**
 * What the package exports, and what importing it loads: client-only code must
 * not pull in the server's dependencies, so the root's import graph is walked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const src = path.join(root, 'src');

/** Every file reachable from `entry` through relative imports, and every package it names. */
function importGraph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string): void => {
    if (files.has(file)) return;
    files.add(file);
    const text = readFileSync(file, 'utf8');
    // Static imports and re-exports, type-only ones included (cheap to be strict),
    // and dynamic import() with a literal specifier.
    const specifiers = [
      ...text.matchAll(/^\s*(?:import|export)\b[^'";]*?\bfrom\s*'([^']+)'/gm),
      ...text.matchAll(/^\s*import\s*'([^']+)'/gm),
      ...text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g),
    ].map((m) => m[1]!);
    for (const spec of specifiers) {
      if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')));
      else packages.add(spec);
    }
  };
  visit(entry);
  return { files, packages };
}

test('the package root loads the client and nothing of the server', () => {
  const { files, packages } = importGraph(path.join(src, 'index.ts'));
  const reached = [...files].map((f) => path.relative(src, f));
  for (const dir of ['server/', 'store/', 'election/', 'group/', 'http/', 'commands/', 'cli/', 'bench/']) {
    assert.deepEqual(reached.filter((f) => f.startsWith(dir)), [], `the root reaches ${dir}`);
  }
  assert.ok(reached.includes('client/client.ts'), `the walk found the client: ${reached.join(', ')}`);
  const external = [...packages].filter((p) => !p.startsWith('node:'));
  assert.deepEqual(external, [], 'the root needs no package beyond Node.js itself');
});

test('the server walk sees what the server needs (so the walk itself works)', () => {
  const { files, packages } = importGraph(path.join(src, 'server', 'index.ts'));
  assert.ok([...files].some((f) => f.endsWith(path.join('server', 'run.ts'))));
  for (const p of ['pino', 'prom-client']) assert.ok(packages.has(p), `the server imports ${p}`);
  // Group mode loads etcd3 on demand; the walk follows the dynamic import too.
  assert.ok(packages.has('etcd3'), 'the server reaches etcd3 through group mode');
});

test('package.json maps the root to the client and ./server to the server API', async () => {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    exports: Record<string, { import: string; types: string }>;
  };
  assert.equal(pkg.exports['.']?.import, './dist/index.js');
  assert.equal(pkg.exports['./server']?.import, './dist/server/index.js');
  const client = (await import('../../src/index.js')) as Record<string, unknown>;
  assert.equal(typeof client.SequencerClient, 'function');
  assert.equal(client.startServer, undefined, 'the root no longer exports the server');
  const server = await import('../../src/server/index.js');
  assert.equal(typeof server.startServer, 'function');
  assert.equal(typeof server.parseConfig, 'function');
});

test('dolmeangi/server, imported by package name as users do, starts and stops a server', async () => {
  // The built package (pretest builds it), through package.json's exports.
  const { parseConfig, startServer } = await import('dolmeangi/server');
  const server = await startServer(parseConfig(['--host=127.0.0.1', '--port=0', '--metrics-port=0', '--in-memory']), {
    log: (await import('pino')).pino({ enabled: false }),
  });
  try {
    assert.ok(server.port > 0);
    assert.equal(server.mode, 'in-memory');
  } finally {
    await server.close();
  }
});
