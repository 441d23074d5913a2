import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { COMMAND_NAMES, Decoder, KEPT_WORDS, MAX_ARRAY, MAX_BULK, MAX_LINE } from '../../src/protocol/decoder.js';
import { COMMANDS } from '../../src/commands/index.js';
import { resp } from '../helpers/wire.js';
import { bytewise, cut, splits } from '../helpers/chunks.js';

interface Outcome {
  frames: string[][];
  error: string | null;
}

/** Feeds the chunks in order and collects frames up to the first error. */
function decode(chunks: Buffer[]): Outcome {
  const d = new Decoder();
  const frames: string[][] = [];
  let error: string | null = null;
  for (const c of chunks) {
    const err = d.feed(c, (w) => frames.push(w));
    if (err && error === null) error = err.message;
  }
  return { frames, error };
}

/** Runs a case whole, byte by byte, and split in two at every offset: all must agree. */
function check(input: string | Buffer, expected: Outcome): void {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
  for (const { how, chunks } of splits(bytes)) assert.deepEqual(decode(chunks), expected, how);
}

const ok = (...frames: string[][]): Outcome => ({ frames, error: null });

test('the decoder knows the same command names as the command table', () => {
  assert.deepEqual([...COMMAND_NAMES].sort(), COMMANDS.map((c) => c.name).sort());
});

test('the decoder keeps every word a command reads', () => {
  for (const c of COMMANDS) {
    const reads = c.readsArgs ?? c.maxArgs;
    assert.ok(reads <= c.maxArgs, `${c.name} reads at most the arguments it takes`);
    assert.ok(1 + reads <= KEPT_WORDS, `${c.name} reads up to ${reads} arguments`);
  }
});

/** What a frame of these words decodes to: words past KEPT_WORDS are handed on empty. */
const kept = (words: string[]): string[] => words.map((w, i) => (i < KEPT_WORDS ? w : ''));

test('inline commands, LF or CRLF, spaces and tabs', () => {
  check('GETSEQ\r\n', ok(['GETSEQ']));
  check('GETSEQ\n', ok(['GETSEQ']));
  check('getseq_batch  100\tfoo\r\n', ok(['getseq_batch', '100', 'foo']));
  check('  PING  \r\n', ok(['PING']));
  check('GETSEQ\nCURRENT\r\nGETSEQ\n', ok(['GETSEQ'], ['CURRENT'], ['GETSEQ']));
});

test('empty inline lines are ignored', () => {
  check('\r\n\n  \r\nPING\r\n\t\n', ok(['PING']));
});

test('an incomplete inline line yields nothing yet', () => {
  check('GETSEQ', ok());
  check('GETSEQ\r', ok());
});

test('RESP arrays of bulk strings', () => {
  check(resp('GETSEQ'), ok(['GETSEQ']));
  check(resp('GETSEQ_BATCH', '100', 'orders'), ok(['GETSEQ_BATCH', '100', 'orders']));
  check(resp('PING', ''), ok(['PING', '']));
  check(resp('ECHO', 'a\r\nb'), ok(['ECHO', 'a\r\nb']));
  check(resp('GETSEQ') + 'PING\r\n' + resp('CURRENT'), ok(['GETSEQ'], ['PING'], ['CURRENT']));
});

test('empty and null arrays are skipped', () => {
  check('*0\r\n*-1\r\nPING\r\n', ok(['PING']));
});

test('bytes are kept one to one (latin1)', () => {
  const bytes = Buffer.concat([Buffer.from('*1\r\n$3\r\n'), Buffer.from([0xff, 0x00, 0x80]), Buffer.from('\r\n')]);
  check(bytes, ok(['\xff\x00\x80']));
});

test('malformed RESP is a protocol error; frames before it are kept', () => {
  check('PING\r\n*x\r\n', { frames: [['PING']], error: 'Protocol error: invalid multibulk length' });
  check('*1\r\n:5\r\n', { frames: [], error: "Protocol error: expected '$', got ':'" });
  check('*1\r\n$x\r\n', { frames: [], error: 'Protocol error: invalid bulk length' });
  check('*1\r\n$-1\r\n', { frames: [], error: 'Protocol error: invalid bulk length' });
  check('*1\r\n$3\r\nabcde\r\n', { frames: [], error: 'Protocol error: bulk string not followed by CRLF' });
  check('*-2\r\n', { frames: [], error: 'Protocol error: invalid multibulk length' });
  check('*1\n', { frames: [], error: 'Protocol error: invalid multibulk length' });
  // Lengths are read as Redis reads them: one spelling per value, no leading zero, no -0.
  check('*01\r\n$4\r\nPING\r\n', { frames: [], error: 'Protocol error: invalid multibulk length' });
  check('*-0\r\n', { frames: [], error: 'Protocol error: invalid multibulk length' });
  check('*1\r\n$04\r\nPING\r\n', { frames: [], error: 'Protocol error: invalid bulk length' });
  check('*1\r\n$-0\r\n', { frames: [], error: 'Protocol error: invalid bulk length' });
  check('*2\r\n$4\r\nPING\r\n$0\r\n\r\n', ok(['PING', '']));
  // A length needs a digit, and a CR is always followed by LF: no byte is skipped unread.
  check('*\r\n', { frames: [], error: 'Protocol error: invalid multibulk length' });
  check('*1\r\n$\r\n', { frames: [], error: 'Protocol error: invalid bulk length' });
  check('*1\rX$4\r\nPING\r\n', { frames: [], error: 'Protocol error: invalid multibulk length' });
  check('*1\r\n$4\rXPING\r\n', { frames: [], error: 'Protocol error: invalid bulk length' });
  check('*1\r\n$4\r\nPING\rX', { frames: [], error: 'Protocol error: bulk string not followed by CRLF' });
});

test('nothing is decoded after a protocol error', () => {
  const d = new Decoder();
  const frames: string[][] = [];
  assert.ok(d.feed(Buffer.from('*z\r\n'), (w) => frames.push(w)));
  assert.equal(d.feed(Buffer.from('PING\r\n'), (w) => frames.push(w)), null);
  assert.deepEqual(frames, []);
});

test('limits: 64 KiB line and bulk, 1,024 elements', () => {
  assert.deepEqual([MAX_LINE, MAX_BULK, MAX_ARRAY], [65536, 65536, 1024]);
  const longest = 'A'.repeat(MAX_LINE);
  assert.deepEqual(decode([Buffer.from(`${longest}\r\n`)]), ok([longest]));
  assert.deepEqual(decode([Buffer.from(`${longest}A\r\n`)]).error, 'Protocol error: too big inline request');
  // Detected without waiting for the end of the line.
  assert.equal(decode([Buffer.from('A'.repeat(MAX_LINE + 2))]).error, 'Protocol error: too big inline request');
  assert.deepEqual(decode([Buffer.from(resp('X', 'b'.repeat(MAX_BULK)))]), ok(['X', 'b'.repeat(MAX_BULK)]));
  assert.equal(decode([Buffer.from(`*1\r\n$${MAX_BULK + 1}\r\n`)]).error, `Protocol error: bulk string longer than ${MAX_BULK} bytes`);
  const many = Array.from({ length: MAX_ARRAY }, () => 'x');
  // Whole, and split anywhere, the header too: a split frame is read element by element.
  check(resp(...many), ok(kept(many)));
  assert.equal(decode([Buffer.from(`*${MAX_ARRAY + 1}\r\n`)]).error, `Protocol error: too many arguments (at most ${MAX_ARRAY})`);
  // Also when the whole oversized frame (or bulk string) has arrived and could be read in one pass.
  assert.equal(decode([Buffer.from(resp(...many, 'x'))]).error, `Protocol error: too many arguments (at most ${MAX_ARRAY})`);
  assert.equal(decode([Buffer.from(resp('X', 'b'.repeat(MAX_BULK + 1)))]).error, `Protocol error: bulk string longer than ${MAX_BULK} bytes`);
  // An inline line is not an array: any number of words within 64 KiB is one request
  // (with the wrong arity for every command), counted up to one more than an array may hold.
  const words = (n: number) => ['GETSEQ', ...Array.from({ length: n - 1 }, () => 'x')];
  assert.deepEqual(decode([Buffer.from(`${words(MAX_ARRAY + 1).join(' ')}\r\nPING\r\n`)]), ok(kept(words(MAX_ARRAY + 1)), ['PING']));
  assert.deepEqual(decode([Buffer.from(`${words(30_000).join(' ')}\r\n`)]), ok(kept(words(MAX_ARRAY + 1))));
  // A header that never ends is an error at once, not a buffer that grows.
  assert.equal(decode([Buffer.from('*' + '1'.repeat(40))]).error, 'Protocol error: invalid multibulk length');
});

test('limits: a frame of many large elements is a frame, and keeps only its first words, whole or in pieces', () => {
  // Whole, byte by byte, and split at every 997th offset: every offset of 320 KiB would take seconds.
  const check = (input: string, expected: Outcome): void => {
    const ways = splits(Buffer.from(input, 'latin1')).filter((_, i) => i < 2 || i % 997 === 0);
    for (const { how, chunks } of ways) assert.deepEqual(decode(chunks), expected, how);
  };
  const big = 'b'.repeat(MAX_BULK);
  const words = ['PING', big, 'c'.repeat(MAX_BULK), big, big];
  check(resp(...words) + 'PING\r\n', ok(['PING', big, 'c'.repeat(MAX_BULK), '', ''], ['PING']));
  check(words.join(' ').slice(0, MAX_LINE) + '\r\n', ok(kept(words.join(' ').slice(0, MAX_LINE).split(' '))));
  // SPEC-sized at worst, 1,024 x 64 KiB (64 MiB) in one frame: read through, never held.
  const d = new Decoder();
  const frames: string[][] = [];
  let error: string | undefined;
  for (let i = 0; i <= MAX_ARRAY && error === undefined; i++) {
    error = d.feed(Buffer.from(i === 0 ? `*${MAX_ARRAY}\r\n` : `$${MAX_BULK}\r\n${big}\r\n`), (w) => frames.push(w))?.message;
    assert.ok(d.buffered <= MAX_BULK + 64, `${d.buffered} bytes buffered`);
  }
  assert.equal(error, undefined);
  assert.equal(frames.length, 1);
  assert.equal(frames[0]!.length, MAX_ARRAY);
  assert.deepEqual(frames[0]!.slice(KEPT_WORDS), Array.from({ length: MAX_ARRAY - KEPT_WORDS }, () => ''));
});

test('a slow sender of a long line costs linear work', () => {
  const d = new Decoder();
  const byte = Buffer.from('A');
  for (let i = 0; i < MAX_LINE; i++) assert.equal(d.feed(byte, () => assert.fail()), null);
  assert.ok(d.buffered <= MAX_LINE);
  const frames: string[][] = [];
  d.feed(Buffer.from('\n'), (w) => frames.push(w));
  assert.equal(frames[0]![0]!.length, MAX_LINE);
});

test('bytes left in the carry buffer by an earlier line are never read as part of a later one', () => {
  // The first line grows the carry buffer and leaves 'A...A\n' in it; 'B' and 'C' then sit at its
  // start with the old LF still further on, where only a search past the bytes received would find it.
  const chunks = ['A'.repeat(1000), '\n', 'B', 'C', '\n'].map((t) => Buffer.from(t, 'latin1'));
  assert.deepEqual(decode(chunks), ok(['A'.repeat(1000)], ['BC']));
  assert.deepEqual(decode(chunks.slice(0, 4)), ok(['A'.repeat(1000)]), 'no frame before its own LF');
});

const word = fc.string({ minLength: 1, maxLength: 12, unit: fc.constantFrom(...'ABCxyz019_.:-'.split('')) });
const frame = fc.array(word, { minLength: 1, maxLength: 5 });
const encoded = fc.tuple(frame, fc.boolean(), fc.boolean()).map(([words, asResp, crlf]) => ({
  words,
  bytes: asResp ? resp(...words) : words.join(' ') + (crlf ? '\r\n' : '\n'),
}));

test('property: any split of a valid pipeline yields the same frames', () => {
  fc.assert(
    fc.property(fc.array(encoded, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 10 }), (pipeline, cuts) => {
      const bytes = Buffer.from(pipeline.map((p) => p.bytes).join(''), 'latin1');
      assert.deepEqual(decode(cut(bytes, cuts)), ok(...pipeline.map((p) => kept(p.words))));
    }),
    { numRuns: 500 },
  );
});

test('property: chunks read into one reused buffer, overwritten after each feed, yield the same frames', () => {
  // The server reads every socket into one shared buffer (server/socket-reads.ts):
  // whatever the decoder keeps of a chunk must be a copy.
  const shared = Buffer.alloc(4096);
  fc.assert(
    fc.property(fc.array(encoded, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 10 }), (pipeline, cuts) => {
      const bytes = Buffer.from(pipeline.map((p) => p.bytes).join(''), 'latin1');
      const d = new Decoder();
      const frames: string[][] = [];
      for (const chunk of cut(bytes, cuts)) {
        chunk.copy(shared);
        assert.equal(d.feed(shared.subarray(0, chunk.length), (w) => frames.push(w)), null);
        shared.fill(0x2a); // '*': would start a frame if any of it were read again
      }
      assert.deepEqual(frames, pipeline.map((p) => kept(p.words)));
    }),
    { numRuns: 500 },
  );
});

test('property: arbitrary bytes yield frames or a protocol error, never an exception', () => {
  const noise = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc.array(fc.constantFrom('*', '$', '\r', '\n', '1', '-', '3', 'A', ' ', ':'), { maxLength: 200 }).map((a) =>
      Uint8Array.from(Buffer.from(a.join(''), 'latin1')),
    ),
  );
  fc.assert(
    fc.property(fc.array(noise, { maxLength: 8 }), (chunks) => {
      const out = decode(chunks.map((c) => Buffer.from(c)));
      for (const f of out.frames) assert.ok(f.length >= 1 && f.length <= MAX_ARRAY);
      if (out.error !== null) assert.match(out.error, /^Protocol error: /);
    }),
    { numRuns: 2000 },
  );
});

test('property: arbitrary bytes give the same frames and error whole, byte by byte, or split anywhere', () => {
  // Whole, RESP arrays take the one-pass path; byte by byte, only the state machine can read them.
  // Valid frames with one byte changed, dropped or added test every rule the one-pass read must share.
  const sym = fc.constantFrom('*', '$', '\r', '\n', '0', '1', '2', '9', '-', 'A', 'b', ' ');
  const damaged = fc
    .tuple(fc.array(fc.constantFrom('GETSEQ', 'ab', 'ac', 'XYZ1', '', '10'), { minLength: 1, maxLength: 3 }), fc.nat(), fc.integer({ min: 0, max: 3 }), sym)
    .map(([words, at, how, c]) => {
      const t = resp(...words);
      const i = at % t.length;
      if (how === 0) return t;
      if (how === 1) return t.slice(0, i) + c + t.slice(i + 1);
      if (how === 2) return t.slice(0, i) + t.slice(i + 1);
      return t.slice(0, i) + c + t.slice(i);
    });
  const noise = fc.array(
    fc.oneof(sym, damaged, fc.constantFrom('*1\r\n$-1\r\n', '*0\r\n', '*-1\r\n', 'XYZ2 ab\r\n')),
    { maxLength: 12 },
  );
  fc.assert(
    fc.property(noise, fc.array(fc.nat(), { maxLength: 6 }), (parts, cuts) => {
      const bytes = Buffer.from(parts.join(''), 'latin1');
      const whole = decode([bytes]);
      assert.deepEqual(decode(bytewise(bytes)), whole, 'byte by byte');
      assert.deepEqual(decode(cut(bytes, cuts)), whole, `cut at ${cuts.join(', ')}`);
    }),
    { numRuns: 2000 },
  );
});

test('an unknown command name of the same length as the last is not taken for it', () => {
  check(resp('XYZ1') + resp('XYZ2', 'a') + 'XYZ2 a\r\nXYZ3\r\n', ok(['XYZ1'], ['XYZ2', 'a'], ['XYZ2', 'a'], ['XYZ3']));
});

test('an argument repeated from the frame before is reused only when every byte matches', () => {
  // Same lengths, different bytes, in both framings and at both argument positions.
  check(
    resp('GETSEQ', 'aaaa') + resp('GETSEQ', 'aaab') + resp('GETSEQ', 'aaab') + resp('GETSEQ_BATCH', '10', 'aaaa') + resp('GETSEQ_BATCH', '11', 'aaab'),
    ok(['GETSEQ', 'aaaa'], ['GETSEQ', 'aaab'], ['GETSEQ', 'aaab'], ['GETSEQ_BATCH', '10', 'aaaa'], ['GETSEQ_BATCH', '11', 'aaab']),
  );
  // Past the remembered length, words are still decoded afresh.
  const long = 'x'.repeat(65);
  check(resp('A', 'b', 'c') + resp('A', 'b', 'd') + resp('A', long) + resp('A', `${long.slice(1)}y`), ok(['A', 'b', 'c'], ['A', 'b', 'd'], ['A', long], ['A', `${long.slice(1)}y`]));
  // A frame cut short falls back to the state machine, which gives the same words.
  const d = new Decoder();
  const frames: string[][] = [];
  const bytes = Buffer.from(resp('GETSEQ', 'orders') + resp('GETSEQ', 'ordert'), 'latin1');
  d.feed(bytes.subarray(0, bytes.length - 3), (w) => frames.push(w));
  d.feed(bytes.subarray(bytes.length - 3), (w) => frames.push(w));
  assert.deepEqual(frames, [['GETSEQ', 'orders'], ['GETSEQ', 'ordert']]);
});

test('hold() stops delivery after the current frame; what was read waits, carried, until release()', () => {
  const d = new Decoder();
  const frames: string[][] = [];
  const sink = (w: string[]) => {
    frames.push(w);
    if (frames.length === 1) d.hold();
  };
  const first = 'PING\r\n' + resp('GETSEQ', 'a') + 'CURRENT a\r\n';
  assert.equal(d.feed(Buffer.from(first, 'latin1'), sink), null);
  assert.deepEqual(frames, [['PING']]);
  assert.equal(d.buffered, first.length - 'PING\r\n'.length);
  // Bytes that come while held are carried too, frames and errors alike.
  assert.equal(d.feed(Buffer.from('GETSEQ\r\n*x\r\n', 'latin1'), sink), null);
  assert.deepEqual(frames, [['PING']]);
  d.release();
  const err = d.feed(Buffer.alloc(0), sink);
  assert.deepEqual(frames, [['PING'], ['GETSEQ', 'a'], ['CURRENT', 'a'], ['GETSEQ']]);
  assert.equal(err?.message, 'Protocol error: invalid multibulk length');
});

test('property: holding after any frames and releasing later gives the same frames and error as not holding', () => {
  const frame = fc.oneof(
    fc.constantFrom('GETSEQ\r\n', 'PING\n', '\r\n', 'GETSEQ_BATCH 5 x\r\n', '*0\r\n', '*1\r\n$-1\r\n'),
    fc.array(fc.constantFrom('GETSEQ', 'a', 'bb', '10', ''), { minLength: 1, maxLength: 4 }).map((w) => resp(...w)),
  );
  const input = fc.tuple(fc.array(frame, { maxLength: 10 }), fc.constantFrom('', '*x\r\n', 'GETSEQ'));
  fc.assert(
    fc.property(input, fc.array(fc.nat(), { maxLength: 6 }), fc.array(fc.nat({ max: 12 }), { maxLength: 4 }), ([parts, tail], cuts, holdAt) => {
      const bytes = Buffer.from(parts.join('') + tail, 'latin1');
      const expected = decode([bytes]);
      const d = new Decoder();
      const frames: string[][] = [];
      let error: string | null = null;
      const sink = (w: string[]) => {
        frames.push(w);
        if (holdAt.includes(frames.length)) d.hold();
      };
      const feed = (c: Buffer) => {
        const err = d.feed(c, sink);
        if (err && error === null) error = err.message;
      };
      // Chunks arrive whether or not the decoder holds; it is released between them, as a
      // reader resumes once its client has read its replies, and at the end.
      cut(bytes, cuts).forEach((c, i) => {
        feed(c);
        if (i % 2 === 1) {
          d.release();
          feed(Buffer.alloc(0));
        }
      });
      for (let i = 0; i < 12; i++) {
        d.release();
        feed(Buffer.alloc(0));
      }
      assert.deepEqual({ frames, error }, expected);
    }),
    { numRuns: 2000 },
  );
});
