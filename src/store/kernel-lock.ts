/**
 * An exclusive flock(2) on the data directory, held through this process's own
 * descriptor of it. Node.js has no flock call, so the `flock` command (util-linux)
 * takes the lock on that descriptor, passed to it as its fd 3, and exits.
 *
 * Why it cannot be lost while the server runs: a flock belongs to the open file
 * description, not to the process that asked for it, and lasts until every
 * descriptor of it is closed. Once `flock` has exited, ours is the only one. So the
 * lock ends with release(), or with this process however it ends (the kernel closes
 * its descriptors at kill -9 too), and with nothing else: no helper process holds it
 * for us, so no helper can die, or be killed by a Ctrl-C or a service manager, and
 * take it away while we still write.
 *
 * Why a flock at all: the other locks of a data directory cannot see every rival.
 * The abstract socket mutex is shared only within one network namespace, and a LOCK
 * file's pid means nothing in another PID namespace, so two containers given one
 * volume and one host name could both take the directory. A flock lives on the
 * directory's inode in the kernel: every process on this kernel sees it, whatever
 * namespaces it runs in.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';

export type KernelLock =
  /** Ours until `release()`, or until this process ends. `unchecked`: why the look from outside could not be made. */
  | { readonly state: 'held'; readonly unchecked?: string; release(): void }
  /** Another process holds it, and kept it for the whole wait. */
  | { readonly state: 'busy' }
  /** No such lock here (no `flock` command, a file system without flock); `reason` says why. */
  | { readonly state: 'unavailable'; readonly reason: string };

/** Tells a lock held elsewhere from flock's own failures (which exit 1). */
const CONFLICT_EXIT = 75;
/**
 * How long to wait for a holder to let go: a server in another container may still be
 * finishing its graceful stop when its replacement starts. (One on this machine and in
 * this network namespace is refused at once by the data directory's mutex, before this.)
 */
const WAIT_SECONDS = 2;
/** Where the descriptor lands in the `flock` process. */
const CHILD_FD = 3;

export async function holdKernelLock(dir: string): Promise<KernelLock> {
  let fd: number;
  try {
    // Opened with O_CLOEXEC (as Node.js opens every file): no other child of ours inherits the lock.
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (err) {
    return { state: 'unavailable', reason: `open ${dir}: ${(err as Error).message}` };
  }
  const took = await runFlock(['--exclusive', '--wait', String(WAIT_SECONDS), '--conflict-exit-code', String(CONFLICT_EXIT), String(CHILD_FD)], fd);
  if (took !== 'ok') {
    fs.closeSync(fd);
    return took === 'busy' ? { state: 'busy' } : took;
  }
  // A flock that exits 0 without locking the descriptor it was given (another implementation, a
  // wrapper) would leave the directory open to a second server with nothing said: a look from
  // outside, through the directory's path, must find it taken.
  const verified = await runFlock(['--nonblock', '--conflict-exit-code', String(CONFLICT_EXIT), dir, 'true'], null);
  // Only a look that took the lock itself proves ours is not real. One that failed for its own
  // reasons proves nothing: the lock `flock` reported is kept.
  if (verified === 'ok') {
    fs.closeSync(fd);
    return { state: 'unavailable', reason: '`flock` reported the lock taken, but the directory was not locked' };
  }
  let open = true;
  return {
    state: 'held',
    ...(verified === 'busy' ? {} : { unchecked: verified.reason }),
    release: () => {
      if (!open) return;
      open = false;
      fs.closeSync(fd);
    },
  };
}

type Outcome = 'ok' | 'busy' | Extract<KernelLock, { state: 'unavailable' }>;

/** Runs `flock` with `fd` (if any) as its descriptor CHILD_FD, and tells how it ended. */
function runFlock(args: string[], fd: number | null): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    let stderr = '';
    const settle = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      resolve(outcome);
    };
    const unavailable = (err: NodeJS.ErrnoException): Outcome => ({
      state: 'unavailable',
      reason: err.code === 'ENOENT' ? 'no flock command (util-linux) on PATH' : `flock: ${err.message}`,
    });
    let child: ChildProcess;
    try {
      child = spawn('flock', args, { stdio: ['ignore', 'ignore', 'pipe', ...(fd === null ? [] : [fd])] });
    } catch (err) {
      // Some spawn failures are thrown rather than reported as 'error'.
      settle(unavailable(err as NodeJS.ErrnoException));
      return;
    }
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      if (stderr.length < 1000) stderr += text;
    });
    // A spawn that failed (no flock on PATH) emits 'error', then 'close': the first settles.
    child.on('error', (err: NodeJS.ErrnoException) => settle(unavailable(err)));
    child.once('close', (code, signal) => {
      if (code === 0) settle('ok');
      else if (code === CONFLICT_EXIT) settle('busy');
      else settle({ state: 'unavailable', reason: stderr.trim().split('\n')[0] || `flock exited (${signal ?? `status ${code}`})` });
    });
  });
}
