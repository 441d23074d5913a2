// Loaded into a server process with NODE_OPTIONS=--import: once the file named by
// DOLMEANGI_TEST_HANG_FILE exists, FileHandle.write(), sync() and datasync() never
// settle, as on a disk that stops answering or a hard NFS mount (the log's writes are
// synchronous, O_DSYNC, so a write is where such a disk holds them).
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';

const marker = process.env.DOLMEANGI_TEST_HANG_FILE;
if (marker) {
  const probe = await open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  for (const name of ['write', 'sync', 'datasync']) {
    const original = proto[name];
    proto[name] = function (...args) {
      // The pending request keeps the process alive, as a real sync in the kernel does.
      return existsSync(marker) ? new Promise(() => setInterval(() => {}, 60_000)) : original.apply(this, args);
    };
  }
}
