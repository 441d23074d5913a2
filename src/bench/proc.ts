/**
 * What the bench reads about processes and the machine, straight from /proc:
 * the server's own CPU time and resident memory, so the cost of a request is
 * charged to the server alone and not to the load generator sharing the box.
 */
import { readFileSync, statfsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';

let ticksPerSecond: number | undefined;

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat. */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    } catch {
      ticksPerSecond = NaN;
    }
    // 100 is what every mainstream Linux build uses; getconf is only a cross-check.
    if (!Number.isFinite(ticksPerSecond) || ticksPerSecond <= 0) ticksPerSecond = 100;
  }
  return ticksPerSecond;
}

/** Seconds of CPU (user + system, every thread) the process has used so far. */
export function cpuSeconds(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so utime (14) and stime (15) sit at 11 and 12.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`cannot parse /proc/${pid}/stat`);
  return (utime + stime) / clockTicks();
}

/** CPU seconds used by this process plus its reaped children (fields 14-17 of /proc/self/stat). */
export function selfAndChildrenCpuSeconds(): number {
  const text = readFileSync('/proc/self/stat', 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  let ticks = 0;
  for (let i = 11; i <= 14; i++) ticks += Number(fields[i]);
  return ticks / clockTicks();
}

/** CPU seconds all cores of the machine have spent busy (not idle, not waiting for I/O) since boot. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  // cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return (user! + nice! + system! + irq! + softirq! + steal!) / clockTicks();
}

/** Resident set size in bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status (has the process exited?)`);
  return Number(m[1]) * 1024;
}

export interface Machine {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryBytes: number;
  readonly kernel: string;
}

export function machine(): Machine {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // Not every kernel exposes a model name (e.g. some ARM boards); os.cpus() is the fallback.
  }
  return { cores: os.cpus().length, cpuModel, memoryBytes: os.totalmem(), kernel: `${os.type()} ${os.release()}` };
}

/** statfs magic numbers worth naming in a report about fsync cost. */
const FILESYSTEMS: Record<number, string> = {
  0xef53: 'ext4',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x794c7630: 'overlayfs',
  0x2fc12fc1: 'zfs',
  0xf2f52010: 'f2fs',
};

/**
 * The filesystem type under `dir`. On tmpfs, fsync is free and every durable
 * number in the report would flatter the server, so the report says which it was.
 */
export function filesystemType(dir: string): string {
  try {
    const type = Number(statfsSync(dir).type);
    return FILESYSTEMS[type] ?? `0x${type.toString(16)}`;
  } catch {
    return 'unknown';
  }
}

/** The bench needs Linux's /proc; say so up front rather than fail halfway. */
export function checkProcfs(): string | null {
  try {
    cpuSeconds(process.pid);
    rssBytes(process.pid);
    return null;
  } catch (err) {
    return `the bench reads server CPU and memory from /proc and needs Linux (${(err as Error).message})`;
  }
}
