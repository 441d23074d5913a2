/**
 * An exclusive flock(2) on the data directory, held by a `flock` process
 * (util-linux) for as long as this server runs. Node.js has no flock of its own.
 *
 * Why: the other locks of a data directory cannot see every rival. The abstract
 * socket mutex is shared only within one network namespace, and a LOCK file's pid
 * means nothing in another PID namespace, so two containers given one volume and
 * one host name could both take the directory. A flock lives on the directory's
 * inode in the kernel: every process on this kernel sees it, whatever namespaces
 * it runs in.
 *
 * The lock dies with us: `flock` holds it while its command, `cat`, reads our end
 * of a pipe. When this process exits, even by kill -9, the kernel closes the pipe,
 * `cat` reads end of file, and `flock` exits, releasing the lock (`--close` keeps
 * it out of `cat`'s hands, so only `flock` ever holds it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { type ProcStat, parseProcStat } from './proc-stat.js';

export type KernelLock =
  /**
   * Ours until `release()`; `onLost` is called if the holding process (`pid`) dies before that.
   * That call waits for an event-loop turn; `stillHeld()` looks at the process at once.
   */
  | { readonly state: 'held'; readonly pid: number; stillHeld(): boolean; release(): Promise<void> }
  /** Another process holds it, and kept it for the whole wait. */
  | { readonly state: 'busy' }
  /** No such lock here (no `flock` command, a file system without flock); `reason` says why. */
  | { readonly state: 'unavailable'; readonly reason: string };

/** Tells a lock held elsewhere from flock's own failures (which exit 1). */
const CONFLICT_EXIT = 75;
/** The shell's status for a command it cannot find: flock is started through sh. */
const NOT_FOUND_EXIT = 127;
/** How long a killed holder gets to let go: its `cat` must be scheduled to see the pipe close. */
const WAIT_SECONDS = 2;

export function holdKernelLock(dir: string, onLost: (why: string) => void): Promise<KernelLock> {
  return new Promise((resolve) => {
    let settled = false;
    let held = false;
    let stderr = '';
    const args = ['--exclusive', '--close', '--wait', String(WAIT_SECONDS), '--conflict-exit-code', String(CONFLICT_EXIT), dir];
    // The lock must last through the server's graceful stop, so what stops the server must not
    // stop its holder: a Ctrl-C at the terminal signals the whole foreground process group (hence
    // a group of its own), and systemd's default KillMode=control-group sends SIGTERM to every
    // process of the unit (hence the signals ignored, which flock and cat inherit across exec).
    // Only release(), or the end of the pipe, ends it.
    const child: ChildProcess = spawn(
      '/bin/sh',
      ['-c', 'trap "" INT TERM HUP && exec "$@"', 'sh', 'flock', ...args, 'sh', '-c', 'echo held && exec cat >/dev/null'],
      { stdio: ['pipe', 'pipe', 'pipe'], detached: true },
    );
    const settle = (lock: KernelLock): void => {
      if (settled) return;
      settled = true;
      resolve(lock);
    };
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      if (stderr.length < 1000) stderr += text;
    });
    child.stdout!.once('data', () => {
      held = true;
      // Held for the process's lifetime, but it must not keep the process alive.
      child.unref();
      for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as { unref?: () => void }).unref?.();
      const exited = new Promise<void>((done) => child.once('exit', () => done()));
      // sh execs flock, so this is flock's pid.
      const pid = child.pid!;
      const watch = ProcessWatch.open(pid);
      child.once('exit', () => watch?.close());
      settle({
        state: 'held',
        pid,
        stillHeld: () => held && (watch === null || watch.running()),
        release: async () => {
          held = false;
          // Waited for: a successor started right after us should find it free.
          child.ref();
          // The lock goes with flock itself; closing the pipe ends its cat.
          child.stdin!.destroy();
          child.kill('SIGKILL');
          await exited;
        },
      });
    });
    // Not once: a second error (a failed kill, a write to the closed pipe) must not go unhandled.
    child.on('error', (err: NodeJS.ErrnoException) => {
      settle({ state: 'unavailable', reason: `flock: ${err.message}` });
    });
    child.once('exit', (code, signal) => {
      if (held) {
        held = false;
        // Its cat may live on, holding our pipe's other end.
        for (const stream of [child.stdin, child.stdout, child.stderr]) stream?.destroy();
        onLost(`its flock process (pid ${child.pid}) exited (${signal ?? `status ${code}`})`);
        return;
      }
      if (code === CONFLICT_EXIT) settle({ state: 'busy' });
      else if (code === NOT_FOUND_EXIT) settle({ state: 'unavailable', reason: 'no flock command (util-linux) on PATH' });
      else settle({ state: 'unavailable', reason: stderr.trim().split('\n')[0] || `flock exited (${signal ?? `status ${code}`})` });
    });
  });
}

/** Linux's PF_EXITING: set as a process starts to exit, before it lets go of its files and locks. */
const PF_EXITING = 0x4;

/**
 * Reads a child's `/proc/<pid>/stat` through a descriptor opened while it runs: once the
 * process is reaped the read fails (ESRCH) rather than reading whatever process gets the pid next.
 */
class ProcessWatch {
  private readonly buf = Buffer.alloc(1024);
  private constructor(private fd: number | null) {}

  /** Null where this cannot be done (no /proc, or one that shows another PID namespace). */
  static open(pid: number): ProcessWatch | null {
    let fd: number;
    try {
      fd = fs.openSync(`/proc/${pid}/stat`, 'r');
    } catch {
      return null;
    }
    const watch = new ProcessWatch(fd);
    if (watch.fields()?.ppid !== process.pid) {
      watch.close();
      return null;
    }
    return watch;
  }

  /** False once the process is exiting, a zombie, or reaped. */
  running(): boolean {
    const f = this.fields();
    if (f === null) return false;
    return f.state !== 'Z' && f.state !== 'X' && (f.flags & PF_EXITING) === 0;
  }

  close(): void {
    if (this.fd === null) return;
    fs.closeSync(this.fd);
    this.fd = null;
  }

  private fields(): ProcStat | null {
    if (this.fd === null) return null;
    let n: number;
    try {
      n = fs.readSync(this.fd, this.buf, 0, this.buf.length, 0);
    } catch {
      return null;
    }
    return parseProcStat(this.buf.toString('latin1', 0, n));
  }
}
