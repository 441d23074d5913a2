/**
 * Property tests of the decoder and command layer together, as a connection
 * drives them: whatever arrives, nothing throws, every request gets exactly
 * one well-formed reply, one-line replies carry no control bytes (so a request
 * cannot forge replies), and nothing runs before AUTH. FUZZ_LONG=1 runs many
 * more cases.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Decoder } from '../../src/protocol/decoder.js';
import { error } from '../../src/protocol/encoder.js';
import { CommandStats, execute, newSession, type Services, type Session } from '../../src/commands/index.js';
import type { Reply } from '../../src/commands/types.js';
import { digestPassword } from '../../src/commands/auth.js';
import { Sequencer } from '../../src/core/sequencer.js';
import { renderInfo } from '../../src/server/info.js';
import { resp } from '../helpers/wire.js';

const LONG = process.env.FUZZ_LONG === '1';
const runs = (normal: number): { numRuns: number } => ({ numRuns: LONG ? normal * 100 : normal });

const PASSWORD = 'fuzz-password-7f3a9c';
/** Longest one-line reply: error messages echo at most 128 characters of the request. */
const MAX_LINE_REPLY = 512;

async function makeServices(password: string | null, maxSequences = 64): Promise<{ services: Services; seq: Sequencer }> {
  const seq = new Sequencer({ store: null, initial: 1n, reserve: 0n, maxSequences });
  await seq.open();
  const services: Services = {
    source: seq,
    maxBatch: 1000n,
    passwordDigest: password === null ? null : digestPassword(password),
    info: () =>
      renderInfo({
        version: 'fuzz',
        mode: 'in-memory',
        role: 'standalone',
        uptimeSeconds: 1,
        tcpPort: 10001,
        tlsPort: null,
        commitThread: null,
        connectedClients: 1,
        maxConnections: 10,
        rejectedConnections: 0,
        totalConnections: 1,
        commandCalls: [['getseq', 3]],
        errorReplies: [['ERR', 1]],
        store: 'memory',
        persistence: 'none',
        persistenceError: null,
        reserve: 0n,
        extra: [],
        sequences: seq.snapshot(),
      }),
    authFailed: () => {},
  };
  return { services, seq };
}

/**
 * Reads one reply at text[pos] and returns where the next one starts; throws
 * on anything that is not a well-formed reply.
 */
function parseReply(text: string, pos: number): number {
  const eol = text.indexOf('\r\n', pos);
  if (eol === -1) throw new Error(`reply without CRLF: ${JSON.stringify(text.slice(pos, pos + 80))}`);
  const line = text.slice(pos + 1, eol);
  switch (text[pos]) {
    case '+':
    case '-':
      // eslint-disable-next-line no-control-regex
      if (/[\x00-\x1f\x7f]/.test(line)) throw new Error(`control byte inside a one-line reply: ${JSON.stringify(line)}`);
      if (line.length > MAX_LINE_REPLY) throw new Error(`one-line reply of ${line.length} bytes`);
      if (text[pos] === '-' && !/^[A-Z]+( .+)?$/.test(line)) throw new Error(`error reply without a code: ${JSON.stringify(line)}`);
      return eol + 2;
    case ':':
      if (!/^(0|[1-9][0-9]*)$/.test(line) || BigInt(line) > (1n << 63n) - 1n) throw new Error(`bad integer reply ${JSON.stringify(line)}`);
      return eol + 2;
    case '$': {
      if (!/^(0|[1-9][0-9]*)$/.test(line)) throw new Error(`bad bulk length ${JSON.stringify(line)}`);
      const end = eol + 2 + Number(line);
      if (text.slice(end, end + 2) !== '\r\n') throw new Error('bulk string not followed by CRLF at its declared length');
      return end + 2;
    }
    case '*': {
      // EXEC's answer: `*0`, as this server queues nothing.
      if (!/^(0|[1-9][0-9]*)$/.test(line)) throw new Error(`bad array length ${JSON.stringify(line)}`);
      let next = eol + 2;
      for (let i = 0; i < Number(line); i++) next = parseReply(text, next);
      return next;
    }
    default:
      throw new Error(`not a reply: ${JSON.stringify(text.slice(pos, pos + 80))}`);
  }
}

function assertOneReply(reply: string): void {
  assert.equal(parseReply(reply, 0), reply.length, `exactly one reply: ${JSON.stringify(reply.slice(0, 200))}`);
}

function countReplies(text: string): number {
  let n = 0;
  for (let pos = 0; pos < text.length; n++) pos = parseReply(text, pos);
  return n;
}

/**
 * What a connection does with a stream of chunks: frames to replies, stopping
 * at QUIT or at a protocol error (whose reply ends the output).
 */
async function serve(chunks: Uint8Array[], services: Services, session: Session = newSession()): Promise<{ out: string; frames: number; failed: boolean }> {
  const decoder = new Decoder();
  const stats = new CommandStats();
  const replies: Array<string | Promise<string>> = [];
  let frames = 0;
  let failed = false;
  for (const chunk of chunks) {
    if (session.quit || failed) break;
    const err = decoder.feed(Buffer.from(chunk), (words) => {
      if (session.quit) return;
      frames++;
      assert.ok(words.length >= 1, 'frames are never empty');
      replies.push(inTurn(execute(words, session, services, stats), replies));
    });
    // As on a connection: after QUIT, even malformed bytes go unanswered.
    if (err !== null && !session.quit) {
      failed = true;
      replies.push(error('ERR', err.message));
    }
  }
  const out = (await Promise.all(replies)).join('');
  return { out, frames, failed };
}

const NAMES = ['GETSEQ', 'CURRENT', 'GETSEQ_BATCH', 'PING', 'INFO', 'AUTH', 'QUIT', 'ECHO', 'SELECT', 'CLIENT', 'MULTI', 'EXEC', 'DISCARD', 'HELLO'];

/** Any latin1 character, with the ones that matter to the protocol over-represented. */
const char = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('a', 'Z', '0', '9', '1', '_', '.', ':', '-', ' ', '\t', '\r', '\n', '*', '$', '+') },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)) },
);
const word = fc.oneof(
  fc.string({ unit: char, maxLength: 20 }),
  fc.constantFrom('1', ':5', '0', '-1', '1000', '1001', '18446744073709551616', 'seq', 'a.b:c-d_e', 'x'.repeat(65), 'default'),
);
const commandName = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.constantFrom(...NAMES), fc.boolean()).map(([n, lower]) => (lower ? n.toLowerCase() : n)) },
  { weight: 1, arbitrary: fc.string({ unit: char, minLength: 1, maxLength: 200 }) },
);
const frame = fc.tuple(commandName, fc.array(word, { maxLength: 4 })).map(([name, args]) => [name, ...args]);

/** A request stream: valid requests, inline or RESP, with bytes flipped and split anywhere. */
const stream = fc
  .tuple(
    fc.array(fc.tuple(frame, fc.boolean()), { minLength: 1, maxLength: 12 }),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
    fc.array(fc.nat(), { maxLength: 4 }),
  )
  .map(([frames, flips, cuts]) => {
    const text = frames.map(([words, inline]) => (inline ? `${words.join(' ')}\r\n` : resp(...words))).join('');
    const bytes = Buffer.from(text, 'latin1');
    for (const [at, value] of flips) bytes[at % bytes.length] = value;
    const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    const chunks: Uint8Array[] = [];
    let from = 0;
    for (const p of [...points, bytes.length]) {
      chunks.push(bytes.subarray(from, p));
      from = p;
    }
    return chunks;
  });

/** A reply as a connection writes it: one to be made in its turn is made once every reply before it is ready. */
function inTurn(reply: Reply, before: ReadonlyArray<string | Promise<string>> = []): string | Promise<string> {
  return typeof reply === 'function' ? Promise.all(before).then(reply) : reply;
}

test('random frames: execute never throws and answers exactly one well-formed reply', async () => {
  const { services } = await makeServices(null);
  await fc.assert(
    fc.asyncProperty(frame, async (words) => {
      const reply = await inTurn(execute(words, newSession(), services, new CommandStats()));
      assertOneReply(reply);
      const name = words[0]!.toUpperCase();
      if (reply.startsWith('$') && name !== 'INFO') {
        if (name === 'CLIENT') {
          // GETNAME, and no name was set on this new connection.
          assert.equal(reply, '$-1\r\n');
        } else {
          // Else only PING <message> and ECHO <message> answer a bulk string: the message, byte for byte.
          assert.ok(name === 'PING' || name === 'ECHO', name);
          assert.equal(reply, `$${words[1]!.length}\r\n${words[1]}\r\n`);
        }
      }
    }),
    runs(500),
  );
});

test('random byte streams: one reply per request, then at most one protocol error', async () => {
  const { services } = await makeServices(null);
  await fc.assert(
    fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 5 }), async (chunks) => {
      const { out, frames, failed } = await serve(chunks, services);
      assert.equal(countReplies(out), frames + (failed ? 1 : 0));
      if (failed) assert.match(out, /-ERR Protocol error: [^\r\n]+\r\n$/);
    }),
    runs(500),
  );
});

test('mutated valid streams: one reply per request, whatever the chunking', async () => {
  await fc.assert(
    fc.asyncProperty(stream, async (chunks) => {
      const whole = Buffer.concat(chunks);
      const a = await serve(chunks, (await makeServices(null)).services);
      const b = await serve([whole], (await makeServices(null)).services);
      assert.equal(countReplies(a.out), a.frames + (a.failed ? 1 : 0));
      // INFO reports uptime and the like identically here, so the outputs must agree.
      assert.equal(a.out, b.out, 'splitting the input never changes the replies');
    }),
    runs(300),
  );
});

test('with a password, nothing but PING, AUTH and QUIT runs before AUTH', async () => {
  await fc.assert(
    fc.asyncProperty(stream, async (chunks) => {
      const { services, seq } = await makeServices(PASSWORD);
      const session = newSession();
      const { out, frames, failed } = await serve(chunks, services, session);
      assert.equal(session.authenticated, false);
      assert.deepEqual(seq.snapshot(), [], 'no sequence was touched');
      assert.equal(countReplies(out), frames + (failed ? 1 : 0));
      for (let pos = 0; pos < out.length; ) {
        const next = parseReply(out, pos);
        const reply = out.slice(pos, next);
        // PING answers +PONG or its message; everything else is an error.
        assert.ok(reply[0] === '-' || reply === '+PONG\r\n' || reply[0] === '$' || reply === '+OK\r\n', reply);
        if (reply === '+OK\r\n') assert.equal(session.quit, true, '+OK before AUTH only answers QUIT');
        pos = next;
      }
    }),
    runs(300),
  );
});

test('inside MULTI nothing runs: until EXEC or DISCARD every request is refused and no sequence is touched', async () => {
  const inside = frame.filter(([name]) => !['EXEC', 'DISCARD'].includes(name!.toUpperCase()));
  await fc.assert(
    fc.asyncProperty(fc.array(inside, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 4 }), async (frames, cuts) => {
      const { services, seq } = await makeServices(null);
      const session = newSession();
      // RESP only: an inline word could carry a line break and so a request of its own.
      const bytes = Buffer.from(resp('MULTI') + frames.map((words) => resp(...words)).join(''), 'latin1');
      const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
      const chunks = [...points, bytes.length].map((p, i, all) => bytes.subarray(i === 0 ? 0 : all[i - 1], p));
      const { out, frames: served, failed } = await serve(chunks, services, session);
      assert.equal(failed, false);
      assert.deepEqual(seq.snapshot(), [], 'no sequence was touched');
      let pos = parseReply(out, 0);
      assert.equal(out.slice(0, pos), '+OK\r\n', 'MULTI');
      for (let n = 1; n < served; n++) {
        const next = parseReply(out, pos);
        const reply = out.slice(pos, next);
        // QUIT still quits, with +OK, and ends the connection: nothing after it is served.
        assert.ok(reply[0] === '-' || (reply === '+OK\r\n' && session.quit && n === served - 1), reply);
        pos = next;
      }
      if (!session.quit) assert.notEqual(session.transaction, null, 'still inside MULTI');
    }),
    runs(300),
  );
});

test('GETSEQ, GETSEQ_BATCH and CURRENT agree with a model of the sequences', async () => {
  const op = fc.tuple(fc.constantFrom('GETSEQ', 'CURRENT', 'GETSEQ_BATCH'), fc.constantFrom('a', 'b', 'default', null), fc.integer({ min: 1, max: 50 }));
  await fc.assert(
    fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
      const { services } = await makeServices(null);
      const session = newSession();
      const stats = new CommandStats();
      const model = new Map<string, bigint>();
      for (const [cmd, name, count] of ops) {
        const key = name ?? 'default';
        const next = model.get(key) ?? 1n;
        const words = [cmd, ...(cmd === 'GETSEQ_BATCH' ? [String(count)] : []), ...(name === null ? [] : [name])];
        const reply = await inTurn(execute(words, session, services, stats));
        assert.equal(reply, `:${next}\r\n`, words.join(' '));
        if (cmd === 'GETSEQ') model.set(key, next + 1n);
        if (cmd === 'GETSEQ_BATCH') model.set(key, next + BigInt(count));
      }
    }),
    runs(200),
  );
});
