/** A look at a directory's flock from outside, as another server would take it. */
import { spawn } from 'node:child_process';

/** `flock`'s exit status for a lock held elsewhere. */
const HELD = 75;

/** Whether another process holds a flock on `dir` now (Linux, util-linux `flock`). */
export function flockHeld(dir: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = spawn('flock', ['--nonblock', '--conflict-exit-code', String(HELD), dir, 'true'], { stdio: 'ignore' });
    probe.once('error', reject);
    probe.once('exit', (code) => {
      if (code === HELD) resolve(true);
      else if (code === 0) resolve(false);
      else reject(new Error(`flock probe of ${dir} exited with ${code}`));
    });
  });
}
