/** The numeric and naming rules every layer shares. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isValidName, parseUnsigned } from '../../src/core/limits.js';

test('parseUnsigned is exact on both sides of the 15-digit shortcut and refuses anything but digits', () => {
  assert.equal(parseUnsigned('0'), 0n);
  assert.equal(parseUnsigned('007'), 7n);
  assert.equal(parseUnsigned('999999999999999'), 999_999_999_999_999n);
  // 2^53 + 1 has no double of its own: it must not go through one.
  assert.equal(parseUnsigned('9007199254740993'), 9_007_199_254_740_993n);
  assert.equal(parseUnsigned('18446744073709551615'), 18_446_744_073_709_551_615n);
  for (const bad of ['', '-1', '+1', '1a', ' 1', '1 ', '1.0', '1e3', '123456789012345678901']) {
    assert.equal(parseUnsigned(bad), undefined, JSON.stringify(bad));
  }
});

test('property: parseUnsigned agrees with BigInt for every string of up to 20 digits', () => {
  fc.assert(
    fc.property(fc.string({ minLength: 1, maxLength: 20, unit: fc.constantFrom(...'0123456789'.split('')) }), (digits) => {
      assert.equal(parseUnsigned(digits), BigInt(digits));
    }),
  );
});

test('names: 1-64 characters of the allowed set', () => {
  assert.equal(isValidName('orders.eu-1:v2_x'), true);
  assert.equal(isValidName('x'.repeat(64)), true);
  for (const bad of ['', 'x'.repeat(65), 'a b', 'a/b', 'é', 'a\r\n']) assert.equal(isValidName(bad), false, JSON.stringify(bad));
});
