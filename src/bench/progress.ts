/**
 * Progress on stderr, so stdout keeps only the results. On a terminal, one
 * status line is redrawn with a bar and the time spent on the current step;
 * elsewhere (CI logs, pipes) each step is one plain line.
 */
export class Progress {
  private step = 0;
  private current = '';
  /** Between end() and the next begin() there is nothing to redraw. */
  private active = false;
  private started = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly tty: boolean;

  constructor(
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = out.isTTY === true;
  }

  /** A step begins; `label` says what is being measured. */
  begin(label: string): void {
    this.step++;
    this.current = label;
    this.active = true;
    this.started = Date.now();
    if (this.tty) {
      this.draw();
      this.timer ??= setInterval(() => this.draw(), 250);
      this.timer.unref();
    }
  }

  /** The current step ended; `summary` is its result in a few words. */
  end(summary: string): void {
    this.active = false;
    this.line(`${this.counter()} ${this.current}: ${summary}`);
  }

  /** Counts `steps` that cannot run (their server did not start), so the total stays true. */
  skip(steps: number, why: string): void {
    for (let i = 0; i < steps; i++) {
      this.begin(why);
      this.end('skipped');
    }
  }

  /** A line that stays (a server started, a part skipped). */
  note(text: string): void {
    this.line(text);
  }

  finish(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.tty) this.out.write('\r\x1b[K');
  }

  private counter(): string {
    const width = String(this.total).length;
    return `[${String(Math.min(this.step, this.total)).padStart(width)}/${this.total}]`;
  }

  private line(text: string): void {
    if (this.tty) this.out.write(`\r\x1b[K${text}\n`);
    else this.out.write(`${text}\n`);
    if (this.tty && this.active) this.draw();
  }

  private draw(): void {
    if (!this.active) return;
    const done = Math.min(this.step - 1, this.total) / this.total;
    const width = 20;
    const filled = Math.round(done * width);
    const bar = '#'.repeat(filled) + '.'.repeat(width - filled);
    const secs = ((Date.now() - this.started) / 1000).toFixed(1);
    const text = `${this.counter()} [${bar}] ${this.current} ${secs} s`;
    const columns = this.out.columns ?? 100;
    this.out.write(`\r\x1b[K${text.slice(0, columns - 1)}`);
  }
}
