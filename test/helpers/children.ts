/** Child processes seen through /proc (Linux). */
import { readFile } from 'node:fs/promises';
import assert from 'node:assert/strict';

/** The pids of `parent`'s children running `command` (their comm). */
export async function childrenRunning(command: string, parent = process.pid): Promise<number[]> {
  const children = (await readFile(`/proc/${parent}/task/${parent}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number);
  const names = await Promise.all(children.map((pid) => readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')));
  return children.filter((_, i) => names[i]!.trim() === command);
}

/** The pid of the `flock` process holding the data directory lock of `server` (this process by default). */
export async function flockProcessOf(server = process.pid): Promise<number> {
  const [helper] = await childrenRunning('flock', server);
  assert.ok(helper !== undefined, `process ${server} runs a flock process`);
  return helper;
}
