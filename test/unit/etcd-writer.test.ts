import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writerKey, writerLease, writerValue } from '../../src/store/etcd-writer.js';

test('the writer key is under the group prefix', () => {
  assert.equal(writerKey('/dolmeangi/'), '/dolmeangi/writer');
});

test('the writer value gives back the lease of the term that wrote it', () => {
  const value = writerValue({ key: '/p/leader', revision: '42', leaseId: '7587862112446119685' });
  assert.equal(value, '{"term":"42","lease":"7587862112446119685"}');
  assert.equal(writerLease(Buffer.from(value)), '7587862112446119685');
});

test('a writer value that names no lease gives none: an older version (the revision alone), a hand edit, no key', () => {
  for (const text of ['42', '', 'not json', '{"term":"42"}', '{"lease":7}', '{"lease":"0"}', '{"lease":"-1"}', '{"lease":"12a"}', 'null', '[]']) {
    assert.equal(writerLease(Buffer.from(text)), null, JSON.stringify(text));
  }
  assert.equal(writerLease(undefined), null);
});
