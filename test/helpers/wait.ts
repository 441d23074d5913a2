/** Waiting on conditions with deadlines: tests never sleep a fixed time. */

/** Polls `check` every few milliseconds until it returns true; rejects naming `what` at the deadline. */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Polls `probe` until it returns a value other than undefined, or fails at the
 * deadline with `what`. Unlike waitFor, a probe that throws is retried (for
 * servers still starting), and the value it found is returned.
 */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = 'no attempt finished';
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
      last = 'not yet';
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${String((last as Error)?.message ?? last)})`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
