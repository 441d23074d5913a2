/**
 * Reports an event that others can cause at will (a wrong password, a failed
 * accept in a flood) at most once per REPEAT_LOG_MS, with how many there were
 * since the last report and the latest detail: they must not be able to flood the log.
 */
const REPEAT_LOG_MS = 10_000;

export interface RepeatReporter {
  /** One more occurrence; the first after a quiet spell is reported at once. */
  failed(detail?: string): void;
  /** Reports what is still unreported and stops the timer. */
  stop(): void;
}

/** `report` writes the line, given `count` and, when one was given, `error` (the latest detail). */
export function repeatReporter(report: (fields: { count: number; error?: string }) => void, counted?: () => void): RepeatReporter {
  let unlogged = 0;
  let lastDetail: string | undefined;
  let timer: NodeJS.Timeout | null = null;
  const flush = () => {
    if (unlogged > 0) report({ count: unlogged, ...(lastDetail === undefined ? {} : { error: lastDetail }) });
    unlogged = 0;
  };
  const tick = () => {
    timer = null;
    if (unlogged === 0) return;
    flush();
    timer = setTimeout(tick, REPEAT_LOG_MS).unref();
  };
  return {
    failed(detail) {
      counted?.();
      lastDetail = detail;
      unlogged++;
      if (timer === null) tick();
    },
    stop() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      flush();
    },
  };
}
