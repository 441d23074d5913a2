import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ReplyDecoder, type Reply, type ReplyDecoderLimits } from '../../src/protocol/reply-decoder.js';
import { cut, splits } from '../helpers/chunks.js';

interface Outcome {
  replies: Reply[];
  error: string | null;
}

function decode(chunks: Buffer[], limits?: Partial<ReplyDecoderLimits>): Outcome {
  const decoder = new ReplyDecoder(limits);
  const replies: Reply[] = [];
  let error: string | null = null;
  for (const chunk of chunks) {
    const e = decoder.feed(chunk, (r) => replies.push(r));
    error ??= e;
  }
  return { replies, error };
}

const int = (value: bigint): Reply => ({ type: 'integer', value });
const simple = (value: string): Reply => ({ type: 'simple', value });
const err = (code: string, message: string): Reply => ({ type: 'error', code, message });
const bulk = (value: string | null): Reply => ({ type: 'bulk', value });
const array = (value: Reply[] | null): Reply => ({ type: 'array', value });

const VALID: Array<[string, Reply[]]> = [
  [':0\r\n', [int(0n)]],
  [':-5\r\n', [int(-5n)]],
  [':9007199254740993\r\n', [int(9007199254740993n)]],
  [':9223372036854775807\r\n', [int(9223372036854775807n)]],
  ['+OK\r\n', [simple('OK')]],
  ['+PONG\r\n', [simple('PONG')]],
  ['+\r\n', [simple('')]],
  ["-ERR Unknown command 'FOO'. Supported: GETSEQ\r\n", [err('ERR', "Unknown command 'FOO'. Supported: GETSEQ")]],
  ['-NOTLEADER\r\n', [err('NOTLEADER', '')]],
  ['-NOTLEADER 10.0.0.2:10001\r\n', [err('NOTLEADER', '10.0.0.2:10001')]],
  ['-NOAUTH Authentication required.\r\n', [err('NOAUTH', 'Authentication required.')]],
  ['$5\r\nhello\r\n', [bulk('hello')]],
  ['$0\r\n\r\n', [bulk('')]],
  ['$-1\r\n', [bulk(null)]],
  ['$4\r\na\r\nb\r\n', [bulk('a\r\nb')]],
  ['*0\r\n', [array([])]],
  ['*-1\r\n', [array(null)]],
  ['*2\r\n:1\r\n$3\r\nfoo\r\n', [array([int(1n), bulk('foo')])]],
  ['*2\r\n*1\r\n+a\r\n:2\r\n', [array([array([simple('a')]), int(2n)])]],
  [
    ':1\r\n:2\r\n+OK\r\n-ERR x\r\n$2\r\nhi\r\n:3\r\n',
    [int(1n), int(2n), simple('OK'), err('ERR', 'x'), bulk('hi'), int(3n)],
  ],
];

test('valid replies decode the same whole, byte by byte and split at every offset', () => {
  for (const [text, expected] of VALID) {
    for (const { how, chunks } of splits(Buffer.from(text, 'latin1'))) {
      assert.deepEqual(decode(chunks), { replies: expected, error: null }, `${JSON.stringify(text)} ${how}`);
    }
  }
});

test('integers are exact beyond 2^53', () => {
  const { replies } = decode([Buffer.from(':9223372036854775806\r\n')]);
  assert.equal((replies[0] as { value: bigint }).value, 2n ** 63n - 2n);
});

const INVALID: Array<[string, Reply[], Partial<ReplyDecoderLimits>?]> = [
  ['x\r\n', []],
  [':1\r\n!', [int(1n)]],
  [':abc\r\n', []],
  [':\r\n', []],
  [':1a\r\n', []],
  [':+1\r\n', []],
  [':1\n', []],
  ['+OK\n', []],
  ['$-2\r\n', []],
  ['$abc\r\n', []],
  ['$3\r\nabcd\r\n', []],
  ['*-2\r\n', []],
  ['*1x\r\n', []],
  [`:${'1'.repeat(40)}\r\n`, []],
  [`$${'1'.repeat(11)}\r\n`, []],
  ['$11\r\nhello world\r\n', [], { maxBulk: 10 }],
  ['*3\r\n:1\r\n:2\r\n:3\r\n', [], { maxArray: 2 }],
  ['*1\r\n*1\r\n*1\r\n:1\r\n', [], { maxDepth: 2 }],
  ['+0123456789A\r\n', [], { maxLine: 10 }],
  ['-0123456789A\r\n', [], { maxLine: 10 }],
];

test('invalid streams report an error at every split, after the replies before it', () => {
  for (const [text, before, limits] of INVALID) {
    for (const { how, chunks } of splits(Buffer.from(text, 'latin1'))) {
      const outcome = decode(chunks, limits);
      assert.notEqual(outcome.error, null, `${JSON.stringify(text)} ${how}: expected an error`);
      assert.deepEqual(outcome.replies, before, `${JSON.stringify(text)} ${how}`);
    }
  }
});

test('replies at each limit exactly decode whole, byte by byte and split at every offset', () => {
  const AT_LIMIT: Array<[string, Reply, Partial<ReplyDecoderLimits>]> = [
    [`+${'a'.repeat(10)}\r\n`, simple('a'.repeat(10)), { maxLine: 10 }],
    [`-E ${'e'.repeat(8)}\r\n`, err('E', 'e'.repeat(8)), { maxLine: 10 }],
    ['$10\r\n0123456789\r\n', bulk('0123456789'), { maxBulk: 10 }],
    ['*2\r\n:1\r\n:2\r\n', array([int(1n), int(2n)]), { maxArray: 2 }],
  ];
  for (const [text, expected, limits] of AT_LIMIT) {
    for (const { how, chunks } of splits(Buffer.from(text, 'latin1'))) {
      assert.deepEqual(decode(chunks, limits), { replies: [expected], error: null }, `${JSON.stringify(text)} ${how}`);
    }
  }
});

test('a line with no end is rejected once it is too long, without waiting for the rest', () => {
  const decoder = new ReplyDecoder({ maxLine: 100 });
  assert.equal(decoder.feed(Buffer.from(':' + '9'.repeat(40)), () => {}) !== null, true);
  const lines = new ReplyDecoder({ maxLine: 100 });
  assert.equal(lines.feed(Buffer.from('+' + 'a'.repeat(100)), () => {}), null);
  assert.notEqual(lines.feed(Buffer.from('a'.repeat(10)), () => {}), null);
});

test('after an error the decoder ignores everything', () => {
  const decoder = new ReplyDecoder();
  const seen: Reply[] = [];
  assert.notEqual(decoder.feed(Buffer.from('?\r\n'), (r) => seen.push(r)), null);
  assert.equal(decoder.feed(Buffer.from(':1\r\n'), (r) => seen.push(r)), null);
  assert.deepEqual(seen, []);
});

test('a large bulk string arriving in many small chunks is decoded once, in linear time', () => {
  const body = 'x'.repeat(2_000_000);
  const bytes = Buffer.from(`$${body.length}\r\n${body}\r\n`);
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 1000) chunks.push(bytes.subarray(i, i + 1000));
  const started = performance.now();
  const { replies, error } = decode(chunks);
  assert.equal(error, null);
  assert.equal((replies[0] as { value: string }).value.length, body.length);
  assert.ok(performance.now() - started < 2000, 'decoding took too long: quadratic buffering?');
});

// ---- properties ----

const latin1 = (opts: { line: boolean; maxLength: number }) =>
  fc
    .array(
      fc.integer({ min: 0, max: 255 }).filter((b) => !opts.line || (b !== 10 && b !== 13)),
      { maxLength: opts.maxLength },
    )
    .map((bytes) => String.fromCharCode(...bytes));

const replyArb: fc.Arbitrary<Reply> = fc.letrec<{ reply: Reply }>((tie) => ({
  reply: fc.oneof(
    { depthSize: 'small', maxDepth: 4 },
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(int),
    latin1({ line: true, maxLength: 30 }).map(simple),
    fc
      .tuple(
        latin1({ line: true, maxLength: 10 }).filter((c) => c.length > 0 && !c.includes(' ')),
        latin1({ line: true, maxLength: 30 }),
      )
      .map(([code, message]) => err(code, message)),
    fc.option(latin1({ line: false, maxLength: 40 }), { nil: null }).map(bulk),
    fc.option(fc.array(tie('reply'), { maxLength: 4 }), { nil: null }).map(array),
  ),
})).reply;

function encode(r: Reply): string {
  switch (r.type) {
    case 'integer':
      return `:${r.value}\r\n`;
    case 'simple':
      return `+${r.value}\r\n`;
    case 'error':
      return r.message === '' ? `-${r.code}\r\n` : `-${r.code} ${r.message}\r\n`;
    case 'bulk':
      return r.value === null ? '$-1\r\n' : `$${r.value.length}\r\n${r.value}\r\n`;
    case 'array':
      return r.value === null ? '*-1\r\n' : `*${r.value.length}\r\n${r.value.map(encode).join('')}`;
  }
}

test('bytes left in the carry buffer by an earlier reply are never read as part of a later one', () => {
  const chunks = [`+${'A'.repeat(1000)}`, '\r\n', '+B', 'C', '\r\n'].map((t) => Buffer.from(t, 'latin1'));
  assert.deepEqual(decode(chunks), { replies: [simple('A'.repeat(1000)), simple('BC')], error: null });
  assert.deepEqual(decode(chunks.slice(0, 4)).replies, [simple('A'.repeat(1000))], 'no reply before its own line ends');
});

test('property: any split of any valid reply stream gives the same replies', () => {
  fc.assert(
    fc.property(fc.array(replyArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (replies, offsets) => {
      const bytes = Buffer.from(replies.map(encode).join(''), 'latin1');
      assert.deepEqual(decode(cut(bytes, offsets)), { replies, error: null });
    }),
    { numRuns: 500 },
  );
});

const noisyBytes = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc
    .array(fc.constantFrom(':', '+', '-', '$', '*', '1', '0', '-1', 'a', ' ', '\r', '\n', '\r\n', '2\r\n'), { maxLength: 60 })
    .map((parts) => new Uint8Array(Buffer.from(parts.join(''), 'latin1'))),
);

test('property: arbitrary bytes give replies or an error, never an exception, whatever the split', () => {
  fc.assert(
    fc.property(noisyBytes, fc.array(fc.nat(), { maxLength: 10 }), (raw, offsets) => {
      const bytes = Buffer.from(raw);
      const whole = decode([bytes], { maxLine: 64, maxBulk: 64, maxArray: 8, maxDepth: 3 });
      const split = decode(cut(bytes, offsets), { maxLine: 64, maxBulk: 64, maxArray: 8, maxDepth: 3 });
      assert.deepEqual(split.replies, whole.replies);
      assert.equal(split.error === null, whole.error === null);
    }),
    { numRuns: 2000 },
  );
});
