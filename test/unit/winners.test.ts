import { test } from 'node:test';
import assert from 'node:assert/strict';
import { leaseOfWinner, winnerKey, winnersPrefix, winnerValue } from '../../src/election/winners.js';

const P = '/dolmeangi/';

test('a key of the record of winners is named after its lease, under the group prefix', () => {
  assert.equal(winnersPrefix(P), '/dolmeangi/winners/');
  assert.equal(winnerKey(P, '7587862112446119685'), '/dolmeangi/winners/7587862112446119685');
  assert.equal(leaseOfWinner(P, Buffer.from(winnerKey(P, '7587862112446119685'))), '7587862112446119685');
  assert.equal(leaseOfWinner(P, Buffer.from(winnerKey(P, '9223372036854775807'))), '9223372036854775807');
});

test('its value names the member and the lease, for whoever reads it', () => {
  assert.deepEqual(JSON.parse(winnerValue('node-2', '7587862112446119690')), { nodeId: 'node-2', lease: '7587862112446119690' });
});

test('a key under the prefix that names no lease is not taken for one: nested, not decimal, past int64', () => {
  for (const name of ['', '0', '-1', '12a', '0x1f', '007', 'x/123', '123/', '9223372036854775808', '12345678901234567890']) {
    assert.equal(leaseOfWinner(P, Buffer.from(`${winnersPrefix(P)}${name}`)), null, JSON.stringify(name));
  }
});
