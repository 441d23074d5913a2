/** Child processes seen through /proc (Linux). */
import { readFile } from 'node:fs/promises';

/** The pids of `parent`'s children running `command` (their comm). */
export async function childrenRunning(command: string, parent = process.pid): Promise<number[]> {
  const children = (await readFile(`/proc/${parent}/task/${parent}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number);
  const names = await Promise.all(children.map((pid) => readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')));
  return children.filter((_, i) => names[i]!.trim() === command);
}

