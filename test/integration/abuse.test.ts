/**
 * Hostile and broken clients against a real server process. Each scenario is
 * bounded in count and time, runs a well-behaved client throughout that checks
 * every reply, and samples the server's resident memory (VmRSS): its growth
 * over the idle server must stay under a bound set from measured peaks with
 * headroom. The figures are in docs/security.md; each test reports its own as
 * a diagnostic.
 */
import { test, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { WireClient, resp } from '../helpers/wire.js';
import { waitFor } from '../helpers/wait.js';

const servers = new Set<ServerProcess>();
const sockets = new Set<net.Socket>();

after(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all([...servers].map((s) => s.kill()));
});

async function start(args: string[]): Promise<ServerProcess> {
  const s = await startServerProcess(['--in-memory', ...args]);
  servers.add(s);
  return s;
}

/** Stops the server cleanly and checks it logged nothing at error level or above. */
async function stop(s: ServerProcess): Promise<void> {
  for (const sock of sockets) sock.destroy();
  sockets.clear();
  const code = await s.stop();
  servers.delete(s);
  assert.equal(code, 0, 'the server exits cleanly');
  const bad = s.logs.filter((l) => typeof l.level === 'number' && l.level >= 50);
  assert.deepEqual(bad, [], 'no error or fatal log lines');
}

const rssMb = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
};

/** Samples the server's RSS every 20 ms until stopped; the peak is what counts. */
function watchRss(pid: number): { readonly baseline: number; stop(): number } {
  const baseline = rssMb(pid);
  let peak = baseline;
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssMb(pid));
    } catch {
      // The process is gone; the test that follows will say why.
    }
  }, 20);
  return {
    baseline,
    stop() {
      clearInterval(timer);
      return Math.max(peak, rssMb(pid));
    },
  };
}

/**
 * Checks how far the peak rose above the idle server's RSS. Bounds are on the
 * growth, not the total, so they do not move with the size of the program.
 */
function checkRss(t: TestContext, what: string, rss: { baseline: number }, peak: number, growthMb: number): void {
  const growth = peak - rss.baseline;
  t.diagnostic(`${what}: RSS baseline ${rss.baseline.toFixed(1)} MB, peak ${peak.toFixed(1)} MB, growth ${growth.toFixed(1)} MB (bound ${growthMb} MB)`);
  assert.ok(growth < growthMb, `${what}: RSS grew by ${growth.toFixed(1)} MB, over the ${growthMb} MB bound`);
}

/**
 * A well-behaved client: one connection asking GETSEQ on a sequence of its own
 * every 20 ms, each reply checked byte for byte, each answer due within 2 s.
 */
class Probe {
  count = 0;
  maxLatencyMs = 0;
  private running = true;
  private failure: Error | null = null;
  private readonly done: Promise<void>;

  private constructor(
    private readonly client: WireClient,
    private readonly name: string,
  ) {
    this.done = this.loop();
  }

  static async start(port: number, name = 'probe'): Promise<Probe> {
    const c = await WireClient.connect(port);
    sockets.add(c.socket);
    return new Probe(c, name);
  }

  private async loop(): Promise<void> {
    try {
      while (this.running) {
        this.client.reset();
        const t0 = performance.now();
        this.client.send(`GETSEQ ${this.name}\r\n`);
        await this.client.expect(`:${this.count + 1}\r\n`, 2000);
        this.maxLatencyMs = Math.max(this.maxLatencyMs, performance.now() - t0);
        this.count++;
        await new Promise((r) => setTimeout(r, 20));
      }
    } catch (err) {
      this.failure = err as Error;
    }
  }

  /** Waits until the client has had `n` answers in all; fails at the deadline, or when the client failed. */
  async waitFor(n: number, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.count < n && this.failure === null) {
      assert.ok(Date.now() < deadline, `the well-behaved client had ${this.count} answers of ${n} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
    if (this.failure !== null) throw new Error(`the well-behaved client failed: ${this.failure.message}`);
  }

  /** Ends the loop; throws what went wrong, if anything. */
  async stop(t: TestContext, minAnswers = 5): Promise<void> {
    this.running = false;
    await this.done;
    this.client.close();
    t.diagnostic(`well-behaved client: ${this.count} answers, slowest ${this.maxLatencyMs.toFixed(1)} ms`);
    if (this.failure) throw new Error(`the well-behaved client failed: ${this.failure.message}`);
    assert.ok(this.count >= minAnswers, `only ${this.count} answers to the well-behaved client`);
  }
}

/** One request on a fresh connection; resolves with the whole reply once it is complete. */
async function ask(port: number, request: string, complete: (text: string) => boolean): Promise<string> {
  const c = await WireClient.connect(port);
  try {
    c.send(request);
    return await c.until(complete, 5000, `a reply to ${JSON.stringify(request)}`);
  } finally {
    c.close();
  }
}

async function current(port: number, name = 'default'): Promise<bigint> {
  const text = await ask(port, `CURRENT ${name}\r\n`, (t) => t.endsWith('\r\n'));
  assert.match(text, /^:\d+\r\n$/);
  return BigInt(text.slice(1, -2));
}

async function connectedClients(port: number): Promise<number> {
  const text = await ask(port, 'INFO\r\n', (t) => /connected_clients:\d+\r\n[\s\S]*\r\n\r\n$/.test(t) || /\r\n# Sequences[\s\S]*\r\n\r\n$/.test(t));
  return Number(/connected_clients:(\d+)/.exec(text)![1]);
}

/** Waits until the server counts `n` clients (the one asking included). */
async function waitForClients(port: number, n: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const seen = await connectedClients(port);
    if (seen === n) return;
    assert.ok(Date.now() < deadline, `the server still counts ${seen} clients, expected ${n}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A raw socket that swallows errors; reads only if `read`. */
function rawConnect(port: number, read: boolean): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.off('error', reject);
      s.on('error', () => {});
      resolve(s);
    });
    s.once('error', reject);
    if (read) s.on('data', () => {});
    sockets.add(s);
  });
}

function closed(s: net.Socket): Promise<number> {
  return new Promise((resolve) => {
    if (s.destroyed) resolve(Date.now());
    else s.once('close', () => resolve(Date.now()));
  });
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]);
}

/** mulberry32: a seeded generator, so a failing run can be repeated. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function garbage(rnd: () => number, kind: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) {
    switch (kind) {
      case 0: // any byte at all
        b[i] = Math.floor(rnd() * 256);
        break;
      case 1: // printable words and line ends: unknown commands
        b[i] = rnd() < 0.05 ? 10 : rnd() < 0.15 ? 32 : 33 + Math.floor(rnd() * 94);
        break;
      default: // RESP-looking noise
        b[i] = '*$\r\n0123456789GETSQ'.charCodeAt(Math.floor(rnd() * 19));
    }
  }
  return b;
}

/** Writes as fast as the socket takes it and never reads; stops at `total` bytes, a stall, or close. */
async function floodWithoutReading(
  s: net.Socket,
  chunk: Buffer,
  total: number,
  stallMs: number,
): Promise<{ written: number; stalled: boolean }> {
  let written = 0;
  while (written < total && !s.destroyed) {
    written += chunk.length;
    if (s.write(chunk)) continue;
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => done(false), stallMs);
      const onDrain = () => done(true);
      const onClose = () => done(true);
      function done(v: boolean) {
        clearTimeout(timer);
        s.off('drain', onDrain);
        s.off('close', onClose);
        resolve(v);
      }
      s.once('drain', onDrain);
      s.once('close', onClose);
    });
    if (!drained) return { written: written - s.writableLength, stalled: true };
  }
  return { written: written - s.writableLength, stalled: false };
}

test('1,000 connections sending garbage: the others are served and memory stays bounded', async (t) => {
  const s = await start(['--max-connections=1100']);
  try {
    const rss = watchRss(s.pid);
    const probe = await Probe.start(s.port);
    const rnd = random(0x5eed);
    const conns: net.Socket[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const opened = await Promise.all(Array.from({ length: 100 }, () => rawConnect(s.port, true)));
      conns.push(...opened);
    }
    // Three rounds of 2 KiB per connection: random bytes, unknown commands, RESP noise.
    for (let round = 0; round < 3; round++) {
      conns.forEach((c, i) => c.write(garbage(rnd, (i + round) % 3, 2048)));
      // Until every byte is in the kernel, then two round trips: the server's loop has had every
      // socket ready to read by then (libuv takes up to 1,024 ready sockets a turn), so the
      // sampler saw the memory of reading it.
      await waitFor(() => conns.every((c) => c.destroyed || c.writableLength === 0), 'the garbage to be sent');
      for (let turn = 0; turn < 2; turn++) assert.equal(await ask(s.port, 'PING\r\n', (x) => x.endsWith('\r\n')), '+PONG\r\n');
    }
    const peak = rss.stop();
    await probe.stop(t);
    checkRss(t, '1,000 garbage connections', rss, peak, 80);
    for (const c of conns) c.destroy();
    await waitForClients(s.port, 1);
    assert.equal(await ask(s.port, 'GETSEQ\r\nPING\r\n', (x) => x.endsWith('+PONG\r\n')), ':1\r\n+PONG\r\n');
  } finally {
    await stop(s);
  }
});

test('slowloris: connections dribbling one byte every 100 ms for 3 s do not slow anyone down', async (t) => {
  const s = await start([]);
  try {
    const rss = watchRss(s.pid);
    const probe = await Probe.start(s.port);
    const slow = await Promise.all(Array.from({ length: 5 }, () => rawConnect(s.port, true)));
    // Frames that never end: a bulk string announced long, then an inline line with no newline.
    const frames = [`*2\r\n$6\r\nGETSEQ\r\n$60000\r\n${'a'.repeat(100)}`, `GETSEQ ${'b'.repeat(100)}`];
    const t0 = Date.now();
    for (let i = 0; Date.now() - t0 < 3000; i++) {
      slow.forEach((c, j) => c.write(frames[j % 2]!.charAt(i % frames[j % 2]!.length)));
      await new Promise((r) => setTimeout(r, 100));
    }
    const peak = rss.stop();
    await probe.stop(t, 50);
    assert.ok(probe.maxLatencyMs < 500, `the slowest answer took ${probe.maxLatencyMs.toFixed(0)} ms`);
    checkRss(t, 'slowloris', rss, peak, 30);
  } finally {
    await stop(s);
  }
});

test('--timeout=1: silent, dribbling and half-open clients are closed after about 1 s; busy ones are not', async (t) => {
  const s = await start(['--timeout=1']);
  try {
    const t0 = Date.now();
    const silent = await rawConnect(s.port, true);
    const dribbling = await rawConnect(s.port, true);
    // Asked one question, then stopped reading and writing (a vanished peer looks the
    // same). Not reading, it cannot see the close itself: the server's count tells.
    const halfOpen = await rawConnect(s.port, false);
    halfOpen.write('GETSEQ\r\n');
    // Pipelined until the server stopped taking more, then went quiet: owed replies
    // that nobody reads are no progress either.
    const hog = await rawConnect(s.port, false);
    void floodWithoutReading(hog, Buffer.from('GETSEQ hog\r\n'.repeat(8192)), 64 << 20, 5000);
    const closes = [silent, dribbling, hog].map(closed);
    const busy = await WireClient.connect(s.port);
    sockets.add(busy.socket);
    let asked = 0;
    let answered = '';
    // Mid-frame bytes are not progress: only complete requests are.
    const frame = `GETSEQ ${'x'.repeat(500)}`;
    let checkedEarly = false;
    for (let i = 0; Date.now() - t0 < 3000; i++) {
      if (!checkedEarly && Date.now() - t0 >= 600) {
        checkedEarly = true;
        // Everyone is still there well before the timeout (the asker makes six).
        assert.equal(await connectedClients(s.port), 6);
      }
      if (!dribbling.destroyed) dribbling.write(frame.charAt(i % frame.length));
      if (i % 3 === 0) {
        busy.send('GETSEQ busy\r\n');
        asked++;
        answered += `:${asked}\r\n`;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const at = await within(Promise.all(closes), 2000, 'idle connections closed');
    const names = ['silent', 'dribbling', 'flooding then silent'];
    at.forEach((when, k) => {
      const ms = when - t0;
      t.diagnostic(`${names[k]} connection closed after ${ms} ms`);
      assert.ok(ms >= 900 && ms <= 3000, `${names[k]} closed after ${ms} ms`);
    });
    // Only the busy client and the one asking are left: the half-open one is gone.
    assert.equal(await connectedClients(s.port), 2);
    await busy.expect(answered, 2000);
    assert.equal(busy.closed, false, 'a client that keeps asking stays connected');
  } finally {
    await stop(s);
  }
});

test('1,000,000 pipelined GETSEQ from a client that never reads: reading stops, memory is bounded, others are served', async (t) => {
  const s = await start([]);
  try {
    const rss = watchRss(s.pid);
    const probe = await Probe.start(s.port);
    const hog = await rawConnect(s.port, false);
    const chunk = Buffer.from('GETSEQ\r\n'.repeat(8192));
    const total = 8 * 1_000_000;
    const r = await within(floodWithoutReading(hog, chunk, total, 1000), 20_000, 'the flood');
    const served = (await current(s.port)) - 1n;
    t.diagnostic(`the hog got ${r.written} bytes into the socket; the server answered ${served} of its requests; stalled: ${r.stalled}`);
    // The kernel's socket buffers (tens of MB on loopback) may take all 8 MB; what
    // matters is that the server stops reading them. Disconnecting is the other outcome.
    if (!hog.destroyed) {
      assert.ok(served < 1_000_000n, `the server answered ${served} requests nobody reads`);
      await new Promise((r2) => setTimeout(r2, 300));
      assert.equal((await current(s.port)) - 1n, served, 'nothing more is read while nothing is taken');
    }
    const peak = rss.stop();
    await probe.stop(t);
    checkRss(t, '1M pipelined, never read', rss, peak, 80);
    hog.destroy();
    await waitForClients(s.port, 1);
  } finally {
    await stop(s);
  }
});

test('a client that asks for more than --client-output-limit without reading is served no further until it reads: its requests wait, not replies in memory', async (t) => {
  const s = await start([]);
  try {
    // 1,000 named sequences make each INFO about 100 KB; 11,000 INFOs are 66 KB of
    // requests, one or two reads, asking for over a gigabyte of replies.
    let names = '';
    for (let i = 0; i < 1000; i++) names += `GETSEQ amplify_${i}_${'n'.repeat(40)}\r\n`;
    await ask(s.port, names, (x) => x.split('\r\n').length > 1000);
    const rss = watchRss(s.pid);
    const probe = await Probe.start(s.port);
    const hog = await rawConnect(s.port, false);
    hog.write('INFO\r\n'.repeat(11_000));
    const unknown = await rawConnect(s.port, false);
    // Unknown commands echo a line about 45 times longer than the request: this
    // client is stopped at the limit too.
    unknown.write('X\n'.repeat(32_000));
    await probe.waitFor(10);
    // The probe, both greedy clients and the one asking: none was dropped.
    assert.equal(await connectedClients(s.port), 4);
    const peak = rss.stop();
    checkRss(t, 'output amplification, held', rss, peak, 80);
    // Once the greedy client reads, it is served on: far more than the limit reaches it.
    let received = 0;
    hog.on('data', (d: Buffer) => (received += d.length));
    await waitFor(() => received > 64 * 1024 * 1024, 'the held client to be served on as it reads', 20_000);
    t.diagnostic(`received ${(received / 1e6).toFixed(0)} MB once reading`);
    hog.destroy();
    unknown.destroy();
    await probe.stop(t);
    assert.equal(await ask(s.port, 'PING\r\n', (x) => x.endsWith('\r\n')), '+PONG\r\n');
  } finally {
    await stop(s);
  }
});

test('a pipeline of large replies (INFO) is served one reply per turn of the event loop: another client is answered in between', async (t) => {
  const s = await start([]);
  try {
    // 1,000 named sequences make each INFO about 100 KB to build and send.
    let names = '';
    for (let i = 0; i < 1000; i++) names += `GETSEQ fair_${i}_${'n'.repeat(40)}\r\n`;
    await ask(s.port, names, (x) => x.split('\r\n').length > 1000);
    // 40 rounds, about 4 MB: under the output limit, so only the turn-taking can let the other in.
    const ROUNDS = 40;
    const hog = await WireClient.connect(s.port);
    sockets.add(hog.socket);
    const other = await WireClient.connect(s.port);
    sockets.add(other.socket);
    // Each INFO is followed by a GETSEQ on a sequence the other client uses too: the
    // number it gets says how much of the pipeline was served before it.
    hog.send('INFO\r\nGETSEQ shared\r\n'.repeat(ROUNDS));
    // Sent once the server is busy with the pipeline (its first reply is out).
    await hog.until((x) => x.length > 0);
    other.send('GETSEQ shared\r\n');
    const got = Number((await other.until((x) => x.endsWith('\r\n'))).slice(1, -2));
    t.diagnostic(`the other client got ${got}: served after ${got - 1} of the ${ROUNDS} rounds`);
    assert.ok(got <= ROUNDS, 'answered while the pipeline was still being served, not after all of it');
    await hog.until((x) => x.split('# Server\r\n').length - 1 === ROUNDS && /:\d+\r\n$/.test(x), 10_000, 'the whole pipeline');
  } finally {
    await stop(s);
  }
});

test('one reply larger than --client-output-limit still goes to a client that reads, and so do the requests sent behind it', async () => {
  // The smallest limit allowed, and the largest legal reply (PING echoes a 64 KiB argument).
  const s = await start(['--client-output-limit=65536']);
  try {
    const arg = 'p'.repeat(65536);
    const c = await WireClient.connect(s.port);
    c.send(resp('PING', arg));
    await c.expect(`$65536\r\n${arg}\r\n`);
    c.send('PING\r\n');
    await c.expect(`$65536\r\n${arg}\r\n+PONG\r\n`);
    // Sent together, the request after the large reply waits for it to be read, then is answered.
    c.reset();
    c.send(resp('PING', arg) + 'PING\r\n' + resp('PING', arg) + 'GETSEQ\r\n');
    await c.expect(`$65536\r\n${arg}\r\n+PONG\r\n$65536\r\n${arg}\r\n:1\r\n`);
    c.close();
  } finally {
    await stop(s);
  }
});

test('huge declared lengths are refused at once, with nothing allocated', async (t) => {
  const s = await start([]);
  try {
    const rss = watchRss(s.pid);
    const cases: Array<[string, string]> = [
      ['*1\r\n$999999999\r\n', 'bulk string longer than 65536 bytes'],
      ['*999999999\r\n', 'too many arguments (at most 1024)'],
      ['*1\r\n$2147483648\r\n', 'invalid bulk length'],
      ['*99999999999999999999\r\n', 'invalid multibulk length'],
      ['*1025\r\n', 'too many arguments (at most 1024)'],
      ['*1\r\n$-5\r\n', 'invalid bulk length'],
    ];
    // 50 connections per case, all at once; each answer must come without more input.
    await Promise.all(
      Array.from({ length: 300 }, async (_, i) => {
        const [request, detail] = cases[i % cases.length]!;
        const c = await WireClient.connect(s.port);
        sockets.add(c.socket);
        const t0 = Date.now();
        c.send(request);
        await c.waitClosed(2000);
        assert.equal(c.text, `-ERR Protocol error: ${detail}\r\n`);
        assert.ok(Date.now() - t0 < 1500, `answered after ${Date.now() - t0} ms`);
      }),
    );
    const peak = rss.stop();
    checkRss(t, 'huge declared lengths', rss, peak, 30);
    assert.equal(await ask(s.port, 'GETSEQ\r\n', (x) => x.endsWith('\r\n')), ':1\r\n');
  } finally {
    await stop(s);
  }
});

test('a flood of 500 connections over --max-connections=50: each gets the error, the 50 keep working', async (t) => {
  const s = await start(['--max-connections=50']);
  try {
    const rss = watchRss(s.pid);
    const probe = await Probe.start(s.port);
    const holders = await Promise.all(
      Array.from({ length: 49 }, async () => {
        const c = await WireClient.connect(s.port);
        sockets.add(c.socket);
        return c;
      }),
    );
    for (const h of holders) h.send('PING\r\n');
    await Promise.all(holders.map((h) => h.expect('+PONG\r\n')));
    const refusals = await Promise.all(
      Array.from({ length: 500 }, async () => {
        const c = await WireClient.connect(s.port).catch(() => null);
        if (c === null) return 'connect failed';
        sockets.add(c.socket);
        await c.waitClosed(5000);
        return c.text;
      }),
    );
    const tally = new Map<string, number>();
    for (const r of refusals) tally.set(r, (tally.get(r) ?? 0) + 1);
    assert.deepEqual([...tally], [['-ERR max number of clients reached\r\n', 500]]);
    // Every holder still works, and their numbers are distinct and in order of asking.
    let expected = 0;
    for (const h of holders) {
      h.reset();
      h.send('GETSEQ held\r\n');
      await h.expect(`:${++expected}\r\n`);
    }
    await probe.waitFor(10);
    const peak = rss.stop();
    await probe.stop(t);
    checkRss(t, 'max-connections flood', rss, peak, 40);
  } finally {
    await stop(s);
  }
});

/** Mutations of valid requests: the inputs a buggy client or a noisy link would send. */
function fuzzInput(rnd: () => number): Buffer {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const words = [
    ['GETSEQ'], ['GETSEQ', 'fz'], ['CURRENT'], ['CURRENT', 'fz.1'], ['GETSEQ_BATCH', '5'], ['GETSEQ_BATCH', ':7', 'fz'],
    ['GETSEQ_BATCH', '0'], ['GETSEQ_BATCH', '-1'], ['GETSEQ_BATCH', '99999999999999999999'], ['PING'], ['PING', 'hi there'],
    ['INFO'], ['AUTH', 'pw'], ['QUIT'], ['FOOBAR', '\r\n'], ['GETSEQ', 'bad name!'], ['GETSEQ', 'x'.repeat(70)], [''],
  ];
  let text = '';
  const n = 1 + Math.floor(rnd() * 20);
  for (let i = 0; i < n; i++) {
    const w = pick(words);
    text += rnd() < 0.5 ? resp(...w) : `${w.join(pick([' ', '\t', '  ']))}${pick(['\r\n', '\n'])}`;
  }
  const b = Buffer.from(text, 'latin1');
  const mutations = Math.floor(rnd() * 4);
  for (let m = 0; m < mutations && b.length > 0; m++) {
    const at = Math.floor(rnd() * b.length);
    b[at] = pick([0, 10, 13, 32, 36, 42, 45, 48, 57, 255, Math.floor(rnd() * 256)]);
  }
  return rnd() < 0.2 ? b.subarray(0, Math.floor(rnd() * b.length)) : b;
}

test('live fuzz: mutated requests over many connections for 2 s; afterwards a fresh client is served correctly', async (t) => {
  const s = await start([]);
  try {
    const seed = Date.now() & 0xffffffff;
    t.diagnostic(`fuzz seed ${seed}`);
    const rnd = random(seed);
    const rss = watchRss(s.pid);
    const probe = await Probe.start(s.port);
    const t0 = Date.now();
    let opened = 0;
    let bytes = 0;
    // 40 workers; each reconnects when the server closes it (QUIT, protocol errors).
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        while (Date.now() - t0 < 2000 && opened < 3000) {
          const c = await rawConnect(s.port, true);
          opened++;
          while (!c.destroyed && Date.now() - t0 < 2000) {
            const input = fuzzInput(rnd);
            bytes += input.length;
            c.write(input);
            await new Promise((r) => setTimeout(r, Math.floor(rnd() * 10)));
            if (c.writableLength > 1 << 20) break;
          }
          c.destroy();
        }
      }),
    );
    const peak = rss.stop();
    t.diagnostic(`${opened} connections, ${bytes} bytes of fuzz`);
    await probe.stop(t);
    checkRss(t, 'live fuzz', rss, peak, 80);
    const c = await WireClient.connect(s.port);
    sockets.add(c.socket);
    c.send('GETSEQ after_fuzz\r\n' + resp('GETSEQ', 'after_fuzz') + 'CURRENT after_fuzz\r\nPING\r\n');
    await c.expect(':1\r\n:2\r\n:3\r\n+PONG\r\n');
    assert.equal(s.child.exitCode, null, 'the server still runs');
  } finally {
    await stop(s);
  }
});

test('replies waiting for storage count against the output limit: a deep pipeline in gapless mode is served in full, a part at a time', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dolmeangi-pending-'));
  const s = await startServerProcess([`--data-dir=${dir}`, '--reserve=0', '--client-output-limit=65536']);
  try {
    const greedy = await WireClient.connect(s.port);
    // 256 bytes are counted per waiting reply: 2,000 of them pass 64 KiB, so the
    // connection stops taking requests part of the way through, and goes on as
    // replies leave. Every request is answered, in order.
    greedy.send('GETSEQ\r\n'.repeat(2000));
    const polite = await WireClient.connect(s.port);
    polite.send('GETSEQ\r\n'.repeat(100));
    await greedy.until((t) => t.split('\r\n').length > 2000, 20_000, '2,000 replies');
    await polite.until((t) => t.split('\r\n').length > 100, 10_000, '100 replies');
    const numbers = [...greedy.text.split('\r\n').slice(0, 2000), ...polite.text.split('\r\n').slice(0, 100)].map((l) => {
      assert.match(l, /^:\d+$/);
      return Number(l.slice(1));
    });
    assert.equal(new Set(numbers).size, 2100, 'no number twice');
    const mine = numbers.slice(0, 2000);
    assert.ok(mine.every((n, i) => i === 0 || n > mine[i - 1]!), 'increasing on the one connection');
    greedy.close();
    polite.close();
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
