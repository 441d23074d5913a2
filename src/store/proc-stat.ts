/**
 * The fields of a Linux `/proc/<pid>/stat` line that the data directory's locks look at:
 * "pid (comm) state ppid pgrp session tty_nr tpgid flags ...". The command name may hold
 * spaces and parentheses, so the fields are counted from the last ')'.
 */
export interface ProcStat {
  /** R, S, D, ... Z (zombie), X (dead). */
  readonly state: string;
  readonly ppid: number;
  /** The kernel's PF_* flags of the task. */
  readonly flags: number;
}

export function parseProcStat(text: string): ProcStat {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ', 7);
  return { state: rest[0] ?? '', ppid: Number(rest[1]), flags: Number(rest[6]) };
}
