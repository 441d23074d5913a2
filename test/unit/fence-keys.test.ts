import { test } from 'node:test';
import assert from 'node:assert/strict';
import { leaseOfTerm, termKey, termsPrefix, termValue } from '../../src/election/fence-keys.js';

test('a term key is named after its lease, under the group prefix', () => {
  assert.equal(termsPrefix('/dolmeangi/'), '/dolmeangi/terms/');
  assert.equal(termKey('/dolmeangi/', '7587862112446119685'), '/dolmeangi/terms/7587862112446119685');
  assert.equal(leaseOfTerm(Buffer.from(termKey('/dolmeangi/', '7587862112446119685'))), '7587862112446119685');
});

test('a term value names the member and its lease, for whoever reads it', () => {
  assert.deepEqual(JSON.parse(termValue('node-2', '7587862112446119690')), { nodeId: 'node-2', lease: '7587862112446119690' });
});

test('a key under the prefix that names no lease is not taken for one', () => {
  for (const name of ['', '0', '-1', '12a', '0x1f', '12345678901234567890', 'leader']) {
    assert.equal(leaseOfTerm(Buffer.from(`/dolmeangi/terms/${name}`)), null, JSON.stringify(name));
  }
});
