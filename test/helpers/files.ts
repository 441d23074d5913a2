/** Temporary directories, and the file handles and descriptors that file-store tests patch and inspect. */
import type { TestContext } from 'node:test';
import { readdirSync, readlinkSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A new directory under the system's temporary one, removed when the test ends. */
export async function tempDir(t: TestContext, prefix = 'dolmeangi-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * The prototype of `fs/promises`' FileHandle, which Node does not export: tests patch
 * its methods (and restore them after). Untyped, as Object.getPrototypeOf gives it:
 * the patches are plain functions over FileHandle's overloads.
 */
export async function fileHandlePrototype(): Promise<any> {
  const probe = await open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  return proto;
}

/** The path a descriptor of this process names (Linux). */
export function fdPath(fd: number): string {
  return readlinkSync(`/proc/self/fd/${fd}`);
}

/** This process's descriptors open on `path`, or on any path `path` accepts. */
export function descriptorsOn(path: string | ((target: string) => boolean)): number[] {
  const on = typeof path === 'string' ? (target: string) => target === path : path;
  const fds: number[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (on(fdPath(Number(fd)))) fds.push(Number(fd));
    } catch {
      // The descriptor readdir itself used, closed by now.
    }
  }
  return fds;
}
