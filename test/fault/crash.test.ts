/**
 * Crash safety of one process on one data directory: kill -9 under load again
 * and again, restart, and let the history checker decide.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readFile, rename, mkdir, readdir, open } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, startServerProcess, runCli, runProgram, type ServerProcess, type StartOptions } from '../helpers/server-process.js';
import { History, assertHistory } from '../helpers/history.js';
import { runLoad } from '../helpers/load.js';
import { WireClient, ask, resp, sequenceMarks } from '../helpers/wire.js';
import { waitFor } from '../helpers/wait.js';
import { childrenRunning } from '../helpers/children.js';
import { flockHeld } from '../helpers/flock.js';

const HOLD_MODULE = fileURLToPath(new URL('../helpers/hold-module.mjs', import.meta.url));

/** Servers of the running test: killed after it, so a failed assertion cannot leave one behind. */
const running: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.kill()));
});

async function start(args: string[], opts?: StartOptions): Promise<ServerProcess> {
  const s = await startServerProcess(args, opts);
  running.push(s);
  return s;
}

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'dolmeangi-crash-'));
}

/** Restarts on `dir` and checks the first GETSEQ: the exact mark a clean stop stored. */
async function assertRestartGives(dir: string, next: bigint | number): Promise<void> {
  const b = await start([`--data-dir=${dir}`]);
  assert.equal(await ask(b.port, 'GETSEQ\r\n'), `:${next}\r\n`);
  assert.equal(await b.stop(), 0);
}

/** A deterministic pseudo-random source, so a failure can be replayed from the seed in its message. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

async function crashLoop(reserve: bigint, rounds: number): Promise<void> {
  const dir = await tempDir();
  const seed = Date.now() % 1_000_000;
  const random = rng(seed);
  const history = new History();
  try {
    for (let round = 0; round < rounds; round++) {
      const server = await start([`--data-dir=${dir}`, `--reserve=${reserve}`]);
      if (round === 0) {
        // The gapless mode, and only it, commits on the main thread.
        assert.match(await ask(server.port, 'INFO\r\n'), new RegExp(`\r\ncommit_thread:${reserve === 0n ? 'main' : 'workers'}\r\n`));
      }
      const killAfter = 50 + Math.floor(random() * 1500);
      let killed = false;
      const load = runLoad(history, {
        port: server.port,
        connections: 4,
        depth: 8,
        maxRequests: 20_000,
        deadline: Date.now() + 10_000,
        batchEvery: 7,
        batchSize: 5n,
        label: `round${round}`,
        onAck: (acked) => {
          if (!killed && acked >= killAfter) {
            killed = true;
            server.child.kill('SIGKILL');
          }
        },
      });
      await load.done;
      if (!killed) server.child.kill('SIGKILL');
      await server.exited;
    }
    // A final clean start must resume above everything acknowledged.
    const server = await start([`--data-dir=${dir}`, `--reserve=${reserve}`]);
    const final = runLoad(history, {
      port: server.port,
      connections: 1,
      depth: 1,
      maxRequests: 10,
      deadline: Date.now() + 10_000,
      label: 'final',
    });
    await final.done;
    assert.equal(await server.stop(), 0);
    // Client ids are round<n>/c<i>, and the final clean run is the last.
    const runOf = (o: { client: string }) => (o.client.startsWith('final/') ? rounds : Number(/^round(\d+)\//.exec(o.client)![1]));
    const r = assertHistory(history, { crashes: rounds, reserve, start: 1n, runOf });
    assert.ok(r.acknowledged > rounds * 50, `seed ${seed}: only ${r.acknowledged} acknowledged`);
    assert.ok(history.ops.some((o) => o.maybe), 'some requests were in flight at a kill');
  } catch (err) {
    (err as Error).message += ` (seed ${seed})`;
    throw err;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('kill -9 under load, 20 times on one data directory: no duplicate, no step back, gaps within the window', () =>
  crashLoop(1000n, 20));

test('the same in the gapless mode: only requests in flight at the kill may be skipped', () => crashLoop(0n, 20));

test('the same with a window that adapts (--reserve=1000000, above the starting window of 1,000)', () => crashLoop(1_000_000n, 20));

test('a clean stop (SIGTERM) and restart continue with no gap, even with a large window', async () => {
  const dir = await tempDir();
  try {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const a = await start([`--data-dir=${dir}`, '--reserve=1000000']);
      const c = await WireClient.connect(a.port);
      c.send('GETSEQ\r\nGETSEQ_BATCH 10\r\nGETSEQ other\r\n');
      await c.until((t) => t.split('\r\n').length > 3);
      const [, first, other] = c.text.split('\r\n').map((l) => l.slice(1));
      c.close();
      assert.equal(await a.stop(signal), 0);
      const b = await start([`--data-dir=${dir}`]);
      const d = await WireClient.connect(b.port);
      d.send('GETSEQ\r\nGETSEQ other\r\n');
      await d.expect(`:${BigInt(first!) + 10n}\r\n:${BigInt(other!) + 1n}\r\n`);
      d.close();
      assert.equal(await b.stop(), 0);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('at the default --reserve, a crash of a quiet sequence skips at most 1,000; a busy one grows its window, and a crash resumes at or above the mark INFO showed', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`]);
    assert.match(await ask(a.port, 'INFO\r\n'), /\r\nreserve:100000000\r\n/);
    for (const n of [1, 2, 3]) assert.equal(await ask(a.port, 'GETSEQ\r\n'), `:${n}\r\n`);
    a.child.kill('SIGKILL');
    await a.exited;
    // The first write reserved the starting window of 1,000: 1 + 1000.
    const b = await start([`--data-dir=${dir}`]);
    assert.equal(await ask(b.port, 'GETSEQ\r\n'), ':1001\r\n');
    // Two million numbers as fast as one connection takes them: the window doubles with
    // each write past 1,000, and stays under the ceiling.
    const c = await WireClient.connect(b.port);
    try {
      for (let round = 0; round < 20; round++) {
        c.reset();
        c.send('GETSEQ_BATCH 1000\r\n'.repeat(100));
        await c.until((t) => t.split('\r\n').length > 100, 10_000, `round ${round}: 100 replies`);
      }
      // The refill asked by the last batches lands a moment after their replies.
      let current = 0n;
      let mark = 0n;
      await waitFor(async () => {
        ({ current, mark } = await sequenceMarks(b.port));
        return mark - current > 1000n;
      }, 'the window to grow past 1,000');
      assert.equal(current, 1002n + 2_000_000n);
      assert.ok(mark - current <= 100_000_000n, `${mark - current} reserved past ${current}`);
      b.child.kill('SIGKILL');
      await b.exited;
      // A refill asked by the last requests may land after INFO, before the kill: then higher.
      const d = await start([`--data-dir=${dir}`]);
      const resumed = BigInt((await ask(d.port, 'GETSEQ\r\n')).slice(1, -2));
      assert.ok(resumed >= mark && resumed <= current + 100_000_000n, `resumed at ${resumed}; INFO said ${mark} at ${current}`);
      assert.equal(await d.stop(), 0);
    } finally {
      c.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * Runs the CLI (after `nodeArgs`) until it opens the FIFO `fifo` for reading, where it waits;
 * sends it `signal` there, then lets it go on by writing `feed` and closing the FIFO. Returns
 * how it ended (or 'still running' after 15 s, when it is killed) and everything it printed.
 */
async function signalWhileHeld(
  fifo: string,
  nodeArgs: string[],
  cliArgs: string[],
  signal: NodeJS.Signals,
  opts: { feed?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ end: number | NodeJS.Signals | null | 'still running'; output: string }> {
  await runProgram('mkfifo', [fifo]);
  const child = spawn(process.execPath, [...nodeArgs, CLI, ...cliArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig)));
  try {
    // Opening a FIFO for writing returns once the reader has opened it: the process is held there.
    const writer = await Promise.race([open(fifo, 'w'), exited.then((code) => Promise.reject(new Error(`exited (${code}) before it reached ${fifo}: ${output}`)))]);
    child.kill(signal);
    if (opts.feed !== undefined) await writer.writeFile(opts.feed);
    await writer.close();
    const deadline = new Promise<'still running'>((r) => setTimeout(r, 15_000, 'still running').unref());
    return { end: await Promise.race([exited, deadline]), output };
  } finally {
    child.kill('SIGKILL');
  }
}

test('a stop asked for while the server starts ends in a clean stop once it has started: exit 0, and the restart has no gap', async () => {
  const dir = await tempDir();
  try {
    const first = await start([`--data-dir=${dir}`]);
    const n = BigInt((await ask(first.port, 'GETSEQ\r\n')).slice(1, -2));
    assert.equal(await first.stop(), 0);
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      // Start-up reads the password file first; a FIFO holds it there until the test writes.
      const fifo = path.join(dir, `password-${signal}`);
      const args = ['sequencer', `--data-dir=${dir}`, '--port=0', '--metrics-port=0', `--requirepass-file=${fifo}`];
      const { end, output } = await signalWhileHeld(fifo, [], args, signal, { feed: 'pw\n' });
      assert.equal(end, 0, `${signal}: ${output}`);
      assert.match(output, new RegExp(`"signal":"${signal}".*"msg":"signal received"`), output);
      assert.match(output, /"msg":"stored the exact next numbers"/, output);
    }
    await assertRestartGives(dir, n + 1n);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a stop asked for while the server's code still loads is a clean stop too: the handlers go in first", async () => {
  const dir = await tempDir();
  try {
    // The process is held while it loads the module that starts the server, before any of it runs.
    const fifo = path.join(dir, 'hold');
    const args = ['sequencer', `--data-dir=${dir}/data`, '--port=0', '--metrics-port=0'];
    const { end, output } = await signalWhileHeld(fifo, ['--import', HOLD_MODULE], args, 'SIGTERM', {
      env: { HOLD_MODULE: '/dist/server/run.js', HOLD_FIFO: fifo },
    });
    assert.equal(end, 0, output);
    assert.match(output, /"signal":"SIGTERM".*"msg":"signal received"/, output);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a second SIGTERM while slow clients drain exits 0 once the exact next numbers are stored: the restart has no gap', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`, '--client-output-limit=104857600']);
    const c = await WireClient.connect(a.port);
    c.send('GETSEQ\r\n'.repeat(5));
    await c.expect(':1\r\n:2\r\n:3\r\n:4\r\n:5\r\n');
    c.close();
    // It does not read: 30 MB of replies owed to it, more than loopback buffers hold, keep the drain waiting.
    const slow = await WireClient.connect(a.port);
    slow.socket.pause();
    slow.send(resp('PING', 'p'.repeat(60_000)).repeat(500));
    let last = -1;
    await waitFor(async () => {
      const pings = Number(/\r\ncmdstat_ping:calls=(\d+)\r\n/.exec(await ask(a.port, 'INFO\r\n'))?.[1] ?? 0);
      const still = pings === last && pings > 0;
      last = pings;
      return still;
    }, 'the server to stop reading the client that does not read');
    a.child.kill('SIGTERM');
    await a.waitForLog((l) => l.msg === 'stored the exact next numbers');
    assert.equal(a.child.exitCode, null, 'still draining the client that does not read');
    a.child.kill('SIGTERM');
    assert.equal(await a.exited, 0);
    assert.ok(a.logs.some((l) => /^second signal: exiting without waiting for clients; the exact next numbers are stored/.test(String(l.msg))));
    slow.close();
    await assertRestartGives(dir, 6);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--in-memory writes no files, and a restart begins again at --initial', async () => {
  const dir = await tempDir();
  try {
    for (let run = 0; run < 2; run++) {
      // Run where the default --data-dir (./data) would be made, were anything written.
      const s = await start(['--in-memory'], { cwd: dir });
      const c = await WireClient.connect(s.port);
      c.send('GETSEQ\r\nGETSEQ\r\n');
      await c.expect(':1\r\n:2\r\n');
      c.close();
      assert.equal(await s.stop(), 0);
      assert.deepEqual(await readdir(dir), [], 'nothing written');
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--initial only seeds new sequences; above the persisted mark it wins', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`]);
    const c = await WireClient.connect(a.port);
    c.send('GETSEQ_BATCH 41\r\n');
    await c.expect(':1\r\n');
    c.close();
    assert.equal(await a.stop(), 0);
    const b = await start([`--data-dir=${dir}`, '--initial=10']);
    const d = await WireClient.connect(b.port);
    d.send('GETSEQ\r\nGETSEQ fresh\r\n');
    await d.expect(':42\r\n:10\r\n');
    d.close();
    assert.equal(await b.stop(), 0);
    const e = await start([`--data-dir=${dir}`, '--initial=1000']);
    await e.waitForLog((l) => /--initial is above the persisted mark/.test(String(l.msg)));
    const f = await WireClient.connect(e.port);
    f.send('GETSEQ\r\n');
    await f.expect(':1000\r\n');
    f.close();
    assert.equal(await e.stop(), 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a second server on the same data directory refuses to start', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`]);
    const r = await runCli(['sequencer', '--host=127.0.0.1', '--port=0', '--metrics-port=0', `--data-dir=${dir}`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`data directory ${dir} is in use by another server`));
    assert.equal(await a.stop(), 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a second server in its own network and PID namespaces (a container sharing the volume and the host name) refuses to start too', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`]);
    // There, the first server's abstract-socket mutex is out of sight, and its pid in LOCK names no process:
    // only the flock on the directory keeps the second out. Were it let in, it would serve (lo is up) until the deadline.
    const r = await runProgram('unshare', [
      '--user', '--map-root-user', '--net', '--pid', '--fork', '--kill-child',
      'sh', '-c', 'ip link set lo up || exit 97; exec "$0" "$@"',
      process.execPath, CLI, 'sequencer', '--host=127.0.0.1', '--port=0', '--metrics-port=0', `--data-dir=${dir}`,
    ], { timeoutMs: 15_000 });
    if (/^unshare: /m.test(r.stderr) || r.code === 97) {
      assert.fail(`this test needs unshare (util-linux) with user namespaces, and ip (iproute2): ${r.stderr.trim()}`);
    }
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`data directory ${dir} is in use by another server \\(a process holds a flock on it`));
    assert.equal(await a.stop(), 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the flock on the data directory is the server\'s own: no process of its own holds it, and it ends with the server, even at kill -9', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`, '--reserve=10']);
    assert.equal(await ask(a.port, 'GETSEQ\r\n'), ':1\r\n');
    // A process holding it for the server could die, or be stopped by a Ctrl-C or a service
    // manager, while the server still writes; then a server in another container could take the directory.
    assert.deepEqual(await childrenRunning('flock', a.pid), [], 'no flock process runs for the server');
    assert.equal(await flockHeld(dir), true, 'held while the server runs');
    a.child.kill('SIGKILL');
    await a.exited;
    assert.equal(await flockHeld(dir), false, 'released with the server, as soon as it is gone');
    const b = await start([`--data-dir=${dir}`, '--reserve=10']);
    assert.equal(await ask(b.port, 'GETSEQ\r\n'), ':11\r\n', 'the next start goes on past the durable window');
    assert.equal(await b.stop(), 0);
    assert.equal(await flockHeld(dir), false, 'released by a clean stop');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('corrupt state stops start-up with a message naming the file; nothing is reset', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`]);
    const c = await WireClient.connect(a.port);
    c.send('GETSEQ\r\n');
    await c.expect(':1\r\n');
    c.close();
    a.child.kill('SIGKILL');
    await a.exited;
    const log = path.join(dir, 'marks.log');
    const bytes = await readFile(log);
    // Flip a byte inside the first record's payload: a checksum mismatch mid-file.
    const at = bytes.length - 6;
    bytes[at] = bytes[at]! ^ 0xff;
    await writeFile(log, Buffer.concat([bytes, bytes.subarray(8)]));
    const r = await runCli(['sequencer', '--host=127.0.0.1', '--port=0', '--metrics-port=0', `--data-dir=${dir}`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`state file ${log.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is unreadable`));
    assert.equal(r.stderr.trim().split('\n').length, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a clean stop that cannot store the exact next numbers says so and exits 1; the next start skips, never repeats', async () => {
  const dir = await tempDir();
  const moved = `${dir}.away`;
  const server = await start([`--data-dir=${dir}`, '--reserve=10']);
  try {
    assert.equal(await ask(server.port, 'GETSEQ\r\n'), ':1\r\n');
    assert.equal(await ask(server.port, 'GETSEQ\r\n'), ':2\r\n');
    await rename(dir, moved);
    assert.equal(await server.stop(), 1);
    assert.ok(server.logs.some((l) => /could not persist exact next numbers/.test(String(l.msg))));
    await rename(moved, dir);
    const again = await start([`--data-dir=${dir}`, '--reserve=10']);
    try {
      // The append went to the open log, which moved with the directory: it may have
      // landed although its path check failed. Either way, nothing below 3.
      assert.match(await ask(again.port, 'GETSEQ\r\n'), /^:(3|11)\r\n$/);
      assert.equal(await again.stop(), 0);
    } finally {
      // After a failure above: stop without asserting, so that failure is the one reported.
      await again.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(moved, { recursive: true, force: true });
  }
});

test('storage failure: numbers below the durable mark still served, then -ERR persistence unavailable, then recovery', async () => {
  const dir = await tempDir();
  const moved = `${dir}.away`;
  const server = await start([`--data-dir=${dir}`, '--reserve=10']);
  const c = await WireClient.connect(server.port);
  try {
    c.send('GETSEQ\r\n');
    await c.expect(':1\r\n');
    // The data directory vanishes: a file now stands where it was.
    await rename(dir, moved);
    await writeFile(dir, 'not a directory');
    c.reset();
    c.send('GETSEQ\r\n'.repeat(40));
    const text = await c.until((t) => t.split('\r\n').length > 40, 10_000, '40 replies');
    const lines = text.split('\r\n').slice(0, 40);
    const numbers = lines.filter((l) => l.startsWith(':')).map((l) => BigInt(l.slice(1)));
    const errors = lines.filter((l) => l.startsWith('-'));
    // The first GETSEQ reserved up to 11 (1 + --reserve): exactly 2..10 are durable.
    assert.ok(numbers.length >= 1 && numbers.length <= 9, `${numbers.length} served within the reserved window`);
    assert.deepEqual(numbers, numbers.map((_, i) => BigInt(i + 2)), 'the durable window is served in order');
    assert.ok(errors.length > 0, 'requests beyond the window are refused');
    for (const e of errors) assert.match(e, /^-ERR persistence unavailable: /);
    await server.waitForLog((l) => /persistence failing/.test(String(l.msg)));
    const failing = await ask(server.port, 'INFO\r\n');
    assert.match(failing, /\r\npersistence:failing\r\npersistence_error:persistence unavailable: [^\r]+\r\n/);
    // Storage comes back: service resumes by itself.
    await rm(dir);
    await rename(moved, dir);
    const deadline = Date.now() + 15_000;
    let reply = '';
    while (Date.now() < deadline) {
      c.reset();
      c.send('GETSEQ\r\n');
      reply = await c.until((t) => t.endsWith('\r\n'));
      if (reply.startsWith(':')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(reply, `:${numbers.length + 2}\r\n`, 'resumes with the next number: the refused requests took nothing');
    await server.waitForLog((l) => /persistence recovered/.test(String(l.msg)));
    const recovered = await ask(server.port, 'INFO\r\n');
    assert.match(recovered, /\r\npersistence:ok\r\n/);
    assert.doesNotMatch(recovered, /persistence_error/);
    c.close();
    assert.equal(await server.stop(), 0, 'a clean stop: the exact next numbers are stored');
  } finally {
    c.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(moved, { recursive: true, force: true });
    await mkdir(tmpdir(), { recursive: true });
  }
});

test('GETSEQ pipelined across SIGTERM: numbers up to the stop, only refusals after, and the restart continues with the next', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`, '--reserve=1000']);
    const c = await WireClient.connect(a.port);
    const lines = (): string[] => c.text.split('\r\n').slice(0, -1);
    // Busy across the stop: each batch goes out as soon as the last is answered, until the server closes.
    let sent = 0;
    while (!c.closed) {
      c.send('GETSEQ\r\n'.repeat(20));
      sent += 20;
      await c.until(() => c.closed || lines().length >= sent, 10_000, `replies to ${sent} requests`);
      if (sent === 200) a.child.kill('SIGTERM');
    }
    assert.equal(await a.exited, 0);
    const replies = lines();
    const served = replies.findIndex((l) => !l.startsWith(':'));
    const numbers = (served === -1 ? replies : replies.slice(0, served)).map((l) => BigInt(l.slice(1)));
    assert.ok(numbers.length >= 200, `the requests answered before the signal got numbers: ${numbers.length}`);
    assert.deepEqual(numbers, Array.from({ length: numbers.length }, (_, i) => BigInt(i + 1)), 'consecutive from 1');
    for (const l of replies.slice(numbers.length)) assert.equal(l, '-ERR server is shutting down; retry on another server');
    // What was refused took nothing: the exact marks were written after the last number handed out.
    await assertRestartGives(dir, numbers.length + 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('SIGTERM answers the requests already read, even those waiting for fsync, then restarts with no gap', async () => {
  const dir = await tempDir();
  try {
    const a = await start([`--data-dir=${dir}`, '--reserve=0']);
    const c = await WireClient.connect(a.port);
    c.send('GETSEQ\r\n'.repeat(500));
    await c.until((t) => t.length > 0, 10_000, 'the first reply');
    a.child.kill('SIGTERM');
    await c.waitClosed(10_000);
    const lines = c.text.split('\r\n').filter((l) => l !== '');
    // The 500 requests left in one write, so the server had read them all before the signal.
    assert.equal(lines.length, 500, 'every request read before the signal is answered');
    const numbers = lines.filter((l) => l.startsWith(':')).map((l) => BigInt(l.slice(1)));
    // Storage is healthy: a request read before the signal is owed a number, not a refusal.
    assert.deepEqual(numbers, Array.from({ length: 500 }, (_, i) => BigInt(i + 1)), 'a number for each, in order, none skipped');
    assert.equal(await a.exited, 0);
    await assertRestartGives(dir, numbers.length + 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('after SIGTERM, requests read but held at --client-output-limit are answered too, as the client reads', async () => {
  // 2,000 sequences make each INFO reply about 120 KB: 300 of them (36 MB) pass the
  // default 8 MiB limit plus what the kernel's socket buffers hold, so the server
  // stops partway and holds the rest of what it read, the GETSEQs at the end included.
  const s = await start(['--in-memory']);
  const setup = await WireClient.connect(s.port);
  setup.send(Array.from({ length: 2000 }, (_, i) => `GETSEQ s${i}\r\n`).join(''));
  await setup.until((t) => t.split('\r\n').length > 2000);
  setup.close();
  const held = await WireClient.connect(s.port);
  held.socket.pause();
  // A few KB: one read.
  held.send('INFO\r\n'.repeat(300) + 'GETSEQ held\r\n'.repeat(100));
  // INFOs answered so far, less the probes' own.
  let probes = 0;
  const answered = async () => Number(/\r\ncmdstat_info:calls=(\d+)\r\n/.exec(await ask(s.port, 'INFO\r\n'))?.[1]) - ++probes;
  let last = -1;
  await waitFor(async () => {
    const now = await answered();
    const still = now === last && now > 0;
    last = now;
    return still;
  }, 'the server to stop serving the client at its output limit');
  assert.ok(last < 300, `held partway: ${last} of 300 INFO requests answered`);
  s.child.kill('SIGTERM');
  await waitFor(() => s.logs.some((l) => l.msg === 'shutting down: no new connections, answering requests already read'), 'the shutdown to begin');
  held.socket.resume();
  await held.waitClosed(10_000);
  const text = held.text;
  let at = 0;
  let infos = 0;
  while (text[at] === '$') {
    const eol = text.indexOf('\r\n', at);
    at = eol + 2 + Number(text.slice(at + 1, eol)) + 2;
    infos++;
  }
  assert.equal(infos, 300);
  assert.equal(text.slice(at), Array.from({ length: 100 }, (_, i) => `:${i + 1}\r\n`).join(''));
  assert.equal(await s.exited, 0);
});

test('QUIT among requests held at --client-output-limit: every reply before it, +OK, then a clean close though the client sent more', async () => {
  // Gapless: each GETSEQ waits for a commit, counted 256 bytes meanwhile, so 300 of
  // them pass the smallest limit and the connection is held; commits release it.
  const dir = await tempDir();
  try {
    const s = await start([`--data-dir=${dir}`, '--reserve=0', '--client-output-limit=65536']);
    const c = await WireClient.connect(s.port);
    c.socket.pause();
    // 1.8 MB of PING replies first, which the kernel takes in but the client does not read
    // yet. What follows QUIT is never served: left unread in the kernel, it would turn the
    // server's close into a reset, which throws away the replies not yet read.
    const arg = 'p'.repeat(60_000);
    c.send(resp('PING', arg).repeat(30) + 'GETSEQ\r\n'.repeat(300) + 'QUIT\r\n' + 'PING\r\n'.repeat(20_000));
    // The server answers, says +OK, and closes its side, all before the client reads a byte.
    await waitFor(async () => /\r\nconnected_clients:1\r\n/.test(await ask(s.port, 'INFO\r\n')), 'the server to close the connection after QUIT', 10_000);
    c.socket.resume();
    await c.waitClosed(10_000);
    assert.equal(c.error, null, `closed cleanly, not with ${c.error?.message}`);
    assert.equal(c.text, `$60000\r\n${arg}\r\n`.repeat(30) + Array.from({ length: 300 }, (_, i) => `:${i + 1}\r\n`).join('') + '+OK\r\n');
    assert.equal(await s.stop(), 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('SIGTERM while a storage write hangs: the server still exits, with status 1, and the next start repeats no number', async () => {
  const dir = await tempDir();
  const elsewhere = await tempDir();
  const hang = path.join(elsewhere, 'hang');
  const preload = fileURLToPath(new URL('../helpers/hang-disk.mjs', import.meta.url));
  try {
    const s = await startServerProcess([`--data-dir=${dir}`, '--reserve=10'], {
      env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${preload}`, DOLMEANGI_TEST_HANG_FILE: hang },
    });
    running.push(s);
    assert.equal(await ask(s.port, 'GETSEQ\r\n'.repeat(5)), ':1\r\n:2\r\n:3\r\n:4\r\n:5\r\n');
    // From here on the disk never finishes a write or a sync: the next
    // reservation hangs, and the requests beyond the window wait for it.
    await writeFile(hang, '');
    const c = await WireClient.connect(s.port);
    c.send('GETSEQ\r\n'.repeat(20));
    await c.until((t) => t.split('\r\n').length > 5, 5000, 'the numbers left in the window');
    s.child.kill('SIGTERM');
    const exited = await Promise.race([s.exited, new Promise<'hung'>((r) => setTimeout(r, 30_000, 'hung').unref())]);
    assert.equal(exited, 1, 'exited with 1 rather than hanging on the write');
    assert.ok(s.logs.some((l) => String(l.msg).startsWith('shutdown did not finish')), 'logged why');
    const handedOut = [...c.text.matchAll(/^:(\d+)\r$/gm)].map((m) => Number(m[1]));
    const highest = Math.max(5, ...handedOut);

    await rm(hang);
    const again = await start([`--data-dir=${dir}`, '--reserve=10']);
    const next = Number(/^:(\d+)/.exec(await ask(again.port, 'GETSEQ\r\n'))?.[1]);
    assert.ok(next > highest, `after the forced exit the next number (${next}) is above every one handed out (${highest})`);
    assert.equal(await again.stop(), 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(elsewhere, { recursive: true, force: true });
  }
});

test('after SIGTERM new connections are refused, while an open one still gets every reply owed', async () => {
  // 1,000 sequences make each INFO reply about 60 KB, so 300 of them (18 MB) cannot all fit in the
  // kernel's socket buffers: most of what is owed is still in the server when the signal comes.
  const s = await start(['--in-memory', `--client-output-limit=${64 * 1024 * 1024}`]);
  const setup = await WireClient.connect(s.port);
  setup.send(Array.from({ length: 1000 }, (_, i) => `GETSEQ s${i}\r\n`).join(''));
  await setup.until((t) => t.split('\r\n').length > 1000);
  setup.close();
  // A client that asks for all of it and reads nothing yet.
  const open = await WireClient.connect(s.port);
  open.socket.pause();
  open.send('INFO\r\n'.repeat(300));
  // Read and answered (each probe is an INFO too): the replies are owed before the signal.
  let probes = 0;
  await waitFor(async () => {
    const calls = /\r\ncmdstat_info:calls=(\d+)\r\n/.exec(await ask(s.port, 'INFO\r\n'))?.[1];
    return Number(calls) >= 300 + ++probes;
  }, 'the server to answer the 300 INFO requests');
  s.child.kill('SIGTERM');
  await waitFor(
    async () => {
      try {
        (await WireClient.connect(s.port)).close();
        return false;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // One that reached the kernel's accept queue as the listener closed is reset: ask again.
        if (code === 'ECONNRESET') return false;
        assert.equal(code, 'ECONNREFUSED');
        return true;
      }
    },
    'the listener to close after SIGTERM',
    4000,
  );
  // Nothing else happens from here until the client reads: a server that dropped what it owed would
  // be gone within this half second, so it is waited out rather than polled for.
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(s.child.exitCode, null, 'still draining the replies owed');
  assert.ok(!s.logs.some((l) => l.msg === 'stopped'), 'not stopped while replies are owed');
  open.socket.resume();
  await open.waitClosed(10_000);
  // Every reply whole, in order: 300 bulk strings and nothing else.
  const text = open.text;
  let at = 0;
  let replies = 0;
  while (at < text.length) {
    const eol = text.indexOf('\r\n', at);
    assert.ok(text[at] === '$' && eol !== -1, `a bulk reply at byte ${at}`);
    const body = eol + 2;
    const length = Number(text.slice(at + 1, eol));
    assert.ok(text.startsWith('# Server', body) && text.startsWith('\r\n', body + length), `reply ${replies} is whole`);
    at = body + length + 2;
    replies++;
  }
  assert.equal(replies, 300);
  assert.equal(await s.exited, 0);
});
