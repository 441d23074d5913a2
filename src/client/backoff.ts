/** Reconnect delays: exponential, capped, with jitter so that many clients cut off at once do not return in step. */

export interface BackoffOptions {
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { minDelayMs: 50, maxDelayMs: 2000 };

/**
 * The delay before retry number `attempt` (0 for the first): half of it fixed,
 * so delays still grow, half random.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = Math.min(options.maxDelayMs, options.minDelayMs * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}
