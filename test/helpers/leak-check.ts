/**
 * Loaded into every test file's process by `npm test` (`--import`). The runner is
 * told to exit when a file's tests are done (`--test-force-exit`), so a server,
 * socket, child process or timer that a test forgot would otherwise pass unseen.
 * After the file's own after() hooks, this waits for what is still open to close,
 * and fails the file, naming what kept running past the deadline.
 */
import { before, beforeEach, type TestContext } from 'node:test';

/** The runner's own pipes to its parent, and closes already under way. */
const EXPECTED = new Set(['PipeWrap', 'TTYWrap', 'CloseReq']);
const DEADLINE_MS = 5_000;

function stillOpen(): string[] {
  return process.getActiveResourcesInfo().filter((kind) => !EXPECTED.has(kind));
}

async function check(): Promise<void> {
  const deadline = performance.now() + DEADLINE_MS;
  let left = stillOpen();
  while (left.length > 0 && performance.now() < deadline) {
    // Unref'd: it keeps nothing alive, so it does not count itself.
    await new Promise((resolve) => setTimeout(resolve, 20).unref());
    left = stillOpen();
  }
  if (left.length === 0) return;
  // An error thrown by a hook this late is not reported; the exit status is.
  process.exitCode = 1;
  process.stderr.write(
    `leak: still open ${DEADLINE_MS} ms after the file's last test and after hooks: ${left.join(', ')}. ` +
      'Close every server, client, socket and child process a test starts (in a finally or an after hook), and clear its timers.\n',
  );
}

// Only in the processes that run test files, not in the runner that collects them.
if (process.env.NODE_TEST_CONTEXT !== undefined) {
  // The root's after() hooks run in the order they were added, and a test file's are
  // added when it loads, which may be after this module's before() hook has run. By
  // the first test, they are all in: add the check then, so that it runs last.
  let root: TestContext | null = null;
  let added = false;
  before((t) => {
    // The root's context: a TestContext, though typed as either.
    if ('after' in t) root = t;
  });
  beforeEach(() => {
    if (added || root === null) return;
    added = true;
    root.after(check);
  });
}
