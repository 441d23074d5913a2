/**
 * The durable store of a single server: high-water marks in a data directory.
 *
 * Files:
 * - `marks.snapshot`: every mark as of generation g. `DOLSEQ01`, then one record
 *   `{"v":1,"g":g,"m":{...}}`. Only ever replaced whole (temp file, fsync, rename,
 *   fsync the directory), so it is either the old file or the complete new one.
 * - `marks.log`: `DOLLOG01`, a header record `{"v":1,"g":g}`, then one record
 *   `{"v":1,"m":{...}}` per persist with the marks it changed. Replaying it over
 *   the snapshot of the same generation gives the current state.
 * - `LOCK`: the pid and host of the server that owns the directory. On Linux
 *   the owner also holds an abstract Unix socket named after the directory
 *   (holdMachineMutex), which the kernel releases when the process dies, and a
 *   flock on the directory itself (kernel-lock.ts), which containers sharing it see.
 *
 * A record is a 4-byte big-endian payload length, the CRC32 of the payload, then
 * the payload (UTF-8 JSON). Marks are decimal strings: they reach 2^63 and must
 * never pass through a JS number.
 *
 * Compaction writes the whole state as snapshot g+1, then replaces the log with an
 * empty one of generation g+1. A log older than the snapshot is what a crash
 * between those two steps leaves; its records are all in the snapshot, so it is
 * ignored. A log newer than the snapshot, a log with no snapshot, or no log beside
 * a snapshot (compaction makes sure one exists before it writes a snapshot: an
 * empty one of generation 0 before the first) means a file was lost or restored
 * from elsewhere, and loading refuses. The one log allowed alone is that empty log
 * of generation 0: the very first compaction stopped before its snapshot.
 */
import { type FileHandle, link, mkdir, open, readFile, readdir, rename, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { getSystemErrorMap } from 'node:util';
import { crc32 } from 'node:zlib';
import type { Marks, Store } from '../core/ports.js';
import { END, checkMarks, parseUnsigned } from '../core/limits.js';
import { DataDirLockedError, PersistenceError, StateCorruptError } from '../errors.js';
import { type KernelLock, holdKernelLock } from './kernel-lock.js';
import { type RepeatReporter, repeatReporter } from '../repeat-reporter.js';

export interface FileStoreOptions {
  log?: (msg: string, fields?: object) => void;
  /**
   * Compact once the log would grow past this many bytes, or past the size of the
   * last snapshot when that is larger (so compaction costs stay proportional to
   * the log writes they save). Default 1 MiB; small values let tests compact often.
   */
  compactAfterBytes?: number;
  /**
   * Fault injection for tests: called before every file-system operation the store
   * makes (`op` is e.g. `write`, `fsync`, `rename`); throwing an errno-style
   * error makes that operation fail as if the OS had failed it.
   */
  beforeIo?: (op: string, path: string) => void;
  /**
   * Append on the calling thread instead of the thread pool. For the gapless
   * mode, where every reply waits for the commit anyway: it saves the
   * thread-pool round trips that otherwise cost more than the write itself, and
   * requests read while the disk syncs wait in the socket buffers for the next
   * commit, as with Redis's `appendfsync always`. With a reservation window it
   * would stall requests that could have been served from memory. Compaction
   * (rare) stays on the thread pool either way.
   */
  blockingCommits?: boolean;
  /**
   * Append with one write to a log opened with O_DSYNC, which returns once the
   * record is on the disk, as a write and an fdatasync would: one system call
   * and one thread-pool round trip instead of two. Under load the main thread
   * sees the end of each round trip only between reads of the sockets, so a
   * reservation write took about two of those, and a busy sequence's requests
   * waited for them. The default on Linux. Elsewhere a write and an fdatasync:
   * Windows has no O_DSYNC, and on macOS it does not flush the drive's cache,
   * where libuv's fdatasync does (F_FULLFSYNC). Tests set it to run both ways.
   */
  syncedWrites?: boolean;
}

const SNAPSHOT = 'marks.snapshot';
const LOG = 'marks.log';
const { O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_DSYNC } = fs.constants;
/** `w`: a new file, written whole (as the log is, under a temp name, before it is renamed into place). */
const NEW_FILE = O_WRONLY | O_CREAT | O_TRUNC;
const LOCK = 'LOCK';
/** `marks.snapshot.tmp-<random>`: a file being written, to be renamed over its namesake. */
const TEMP_INFIX = '.tmp-';
/** What to do about a file intact but in a later format: a backup or moving it away would lose numbers. */
const NEWER_RELEASE = 'Run the release that wrote it, or a later one; do not move it away, it holds the numbers handed out.';
const SNAPSHOT_MAGIC = 'DOLSEQ01';
const LOG_MAGIC = 'DOLLOG01';
const MAGIC_LENGTH = 8;
const HEADER_LENGTH = 8;
const FORMAT_VERSION = 1;
/**
 * Far above any record we write (about 100 bytes per sequence), so a length field
 * beyond it is corruption rather than a record cut short by a crash.
 */
const MAX_RECORD = 256 * 1024 * 1024;
const DEFAULT_COMPACT_AFTER = 1024 * 1024;

/** Data directories this process has locked: its own pid in a LOCK is not proof of anything else. */
const lockedHere = new Set<string>();

export class FileStore implements Store {
  readonly description: string;
  private readonly snapshotPath: string;
  private readonly logPath: string;
  private readonly lockPath: string;
  private readonly say: (msg: string, fields?: object) => void;
  private readonly compactAfter: number;
  private readonly beforeIo: ((op: string, path: string) => void) | undefined;
  /** Appends commit on the calling thread (see FileStoreOptions.blockingCommits). */
  readonly blockingCommits: boolean;
  /** See FileStoreOptions.syncedWrites; logFlags() follows from it. */
  private readonly syncedWrites: boolean;

  /** The merged state; null until load(), so a persist cannot compact an empty map over real state. */
  private marks: Map<string, bigint> | null = null;
  /** Generation of the snapshot and log in place; the next compaction writes gen + 1. */
  private gen = 0;
  private snapshotBytes = 0;
  /**
   * Open log we append to, or null when the next persist must compact instead:
   * before the first compaction, after the log went stale, and after any failed
   * append (the file may then end in a partial record, so it is replaced whole).
   */
  private log: FileHandle | null = null;
  private logId: FileId | null = null;
  /** End of the last good record: where the next append goes. */
  private logSize = 0;
  /**
   * Whether marks.log exists on disk. A snapshot is trusted only beside a log
   * (see load()), so compaction puts one in place before it writes a snapshot
   * when there is none: at the first compaction, or when the last start found none.
   */
  private logOnDisk = false;
  private inflight: Promise<void> | null = null;
  private lockText: string | null = null;
  /**
   * The directory locked at open. Files are created only while the path still
   * names it: a directory that was removed and made again, or an empty mount
   * point left by an unmounted volume, holds neither our LOCK nor our state.
   */
  private dirId: FileId | null = null;
  /**
   * The locked directory, open for the store's life. On Linux a compaction's files
   * go in through it (`/proc/self/fd/<fd>/<name>`), not through the path, so a
   * directory swapped in at the path meanwhile, even swapped in and out again,
   * never receives them: by path, the new snapshot and log could land in one
   * directory while the checks looked at another. `within` is null where /proc
   * offers no such path; files then go in by path, checked as well as can be.
   */
  private dirHandle: FileHandle | null = null;
  private within: string | null = null;
  /** Held while the directory is ours (Linux): see holdMachineMutex. */
  private mutex: net.Server | null = null;
  /** Failed accepts on the mutex, logged a few at a time. */
  private failedAccepts: RepeatReporter | null = null;
  /** Held while the directory is ours, where flock works: see holdDirFlock. */
  private flock: Extract<KernelLock, { state: 'held' }> | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    readonly dir: string,
    opts: FileStoreOptions,
  ) {
    this.description = `file:${dir}`;
    this.snapshotPath = join(dir, SNAPSHOT);
    this.logPath = join(dir, LOG);
    this.lockPath = join(dir, LOCK);
    this.say = opts.log ?? (() => {});
    this.compactAfter = opts.compactAfterBytes ?? DEFAULT_COMPACT_AFTER;
    this.beforeIo = opts.beforeIo;
    this.blockingCommits = opts.blockingCommits ?? false;
    this.syncedWrites = opts.syncedWrites ?? process.platform === 'linux';
    if (this.syncedWrites && O_DSYNC === undefined) throw new Error('syncedWrites needs O_DSYNC, which this platform lacks');
  }

  /** `flags` for opening the log: with O_DSYNC under syncedWrites. */
  private logFlags(flags: number): number {
    return this.syncedWrites ? flags | O_DSYNC : flags;
  }

  /** Creates the directory if needed (mode 0700) and locks it. Call load() next. */
  static async open(dir: string, opts: FileStoreOptions = {}): Promise<FileStore> {
    const store = new FileStore(resolve(dir), opts);
    await store.createDir();
    await store.lock();
    return store;
  }

  async load(): Promise<Map<string, bigint>> {
    if (this.closing) throw new Error(`${this.description} is closed`);
    await this.dropLog();
    await this.removeTempFiles();
    const snapshot = await this.readIfExists(this.snapshotPath);
    const { marks, gen } =
      snapshot === null ? { marks: new Map<string, bigint>(), gen: 0 } : parseSnapshot(snapshot, this.snapshotPath);
    const log = await this.readIfExists(this.logPath);
    // Compactions replace the log by rename, never remove it, and make sure one
    // exists before they write a snapshot (compact()), so without one beside a
    // snapshot the records since that snapshot were lost. (Earlier builds wrote
    // the first snapshot with no log: a crash right then left a lone snapshot of
    // generation 1, refused now too; see docs/operations.md.)
    if (log === null && gen >= 1) {
      throw new StateCorruptError(
        this.logPath,
        `it is missing beside ${this.snapshotPath} of generation ${gen}: the marks written since that snapshot are lost, so resuming could hand out numbers again`,
      );
    }
    if (log !== null) {
      const header = parseLogHeader(log, this.logPath);
      if (snapshot === null) {
        // Put in place before the very first snapshot, and never given a record:
        // nothing was stored yet, and the first persist compacts as on a new directory.
        if (header.gen !== 0 || header.end !== log.length) {
          throw new StateCorruptError(
            this.logPath,
            `it continues snapshot generation ${header.gen}, but ${this.snapshotPath} is missing`,
          );
        }
      } else if (header.gen > gen) {
        throw new StateCorruptError(
          this.logPath,
          `it continues snapshot generation ${header.gen}, but ${this.snapshotPath} is generation ${gen}: the snapshot is an older copy`,
        );
      } else if (header.gen < gen) {
        this.say('ignoring a log left by an interrupted compaction; the snapshot already holds its marks', {
          file: this.logPath,
        });
      } else {
        const { end, torn } = replay(log, header.end, marks, this.logPath);
        await this.reopenLog(end, torn === null ? null : { bytes: log.length - end, why: torn });
      }
    }
    // Read through the directory held since the lock; served only if the path still names
    // it, as a later start will read that path (moved away meanwhile, say, it would not).
    await this.checkDirIsOurs();
    this.marks = marks;
    this.gen = gen;
    this.snapshotBytes = snapshot?.length ?? 0;
    this.logOnDisk = log !== null;
    return new Map(marks);
  }

  async persist(marks: Marks): Promise<void> {
    if (this.closing) throw new PersistenceError(`${this.description} is closed`);
    if (this.marks === null) throw new Error('FileStore.persist called before load()');
    // Two appends at the same offset would overwrite each other.
    if (this.inflight) throw new Error('FileStore.persist called while another persist is in flight');
    checkMarks(marks);
    if (marks.size === 0) return;
    const write = this.write(marks);
    this.inflight = write;
    try {
      await write;
    } finally {
      this.inflight = null;
    }
  }

  async close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.inflight) await this.inflight.catch(() => {});
    await this.dropLog();
    await this.unlock();
  }

  /** `this.marks` (what is durable) changes only once the write has succeeded. */
  private async write(changes: Marks): Promise<void> {
    const current = this.marks!;
    const record = frame(`{"v":${FORMAT_VERSION},"m":${marksJson(changes)}}`);
    if (this.log === null || this.logSize + record.length > Math.max(this.compactAfter, this.snapshotBytes)) {
      const merged = new Map(current);
      for (const [name, mark] of changes) merged.set(name, mark);
      await this.compact(merged);
      this.marks = merged;
    } else {
      // In place: a copy of every mark per append would cost each commit in proportion to all the sequences.
      await this.append(this.log, record);
      for (const [name, mark] of changes) current.set(name, mark);
    }
  }

  private async append(log: FileHandle, record: Buffer): Promise<void> {
    try {
      const now = this.blockingCommits ? this.appendBlocking(log, record) : await this.appendPooled(log, record);
      // An open handle keeps writing happily into a file that was deleted or
      // replaced; the write would then "succeed" into a file nobody will read.
      if (!sameFile(now, this.logId)) throw replacedError(this.logPath, this.dir);
    } catch (err) {
      await this.dropLog();
      throw err;
    }
    this.logSize += record.length;
  }

  /** Writes `record` at the end of the log and has it on the disk; returns what the log's path names now. */
  private async appendPooled(log: FileHandle, record: Buffer): Promise<fs.BigIntStats> {
    const write = () => this.io('write', this.logPath, () => writeAll(log, record, this.logSize));
    const check = () => this.io('stat', this.logPath, () => stat(this.logPath, { bigint: true }));
    if (this.syncedWrites) {
      // The path check runs beside the write, not after it: one thread-pool round trip.
      // A file replaced during the write is caught by the next append's check, as one
      // replaced just after this append returned would be.
      const [, now] = await Promise.all([write(), check()]);
      return now;
    }
    await write();
    // Beside the sync, not after it: one thread-pool round trip.
    const [, now] = await Promise.all([this.io('fdatasync', this.logPath, () => log.datasync()), check()]);
    return now;
  }

  /** appendPooled on the calling thread (see `blockingCommits`). */
  private appendBlocking(log: FileHandle, record: Buffer): fs.BigIntStats {
    const fd = log.fd;
    this.ioBlocking('write', this.logPath, () => writeAllBlocking(fd, record, this.logSize));
    if (!this.syncedWrites) this.ioBlocking('fdatasync', this.logPath, () => fs.fdatasyncSync(fd));
    return this.ioBlocking('stat', this.logPath, () => fs.statSync(this.logPath, { bigint: true }));
  }

  /**
   * Until the new log is in place, the old one is left as it is: with the new
   * snapshot it is stale (ignored), without it current. The generation advances
   * only on success; retrying with the same one is safe because no record is ever
   * appended to a log whose compaction failed.
   */
  private async compact(merged: Map<string, bigint>): Promise<void> {
    await this.dropLog();
    await this.checkDirIsOurs();
    if (!this.logOnDisk) {
      // A crash between the snapshot and the log below must leave a log, or the
      // next start would take the lone snapshot for a lost log.
      const empty = await this.install(this.logPath, frame(`{"v":${FORMAT_VERSION},"g":${this.gen}}`, LOG_MAGIC), this.logFlags(NEW_FILE));
      await empty.close().catch(() => {});
      this.logOnDisk = true;
    }
    const gen = this.gen + 1;
    const snapshot = frame(`{"v":${FORMAT_VERSION},"g":${gen},"m":${marksJson(merged)}}`, SNAPSHOT_MAGIC);
    const snapshotHandle = await this.install(this.snapshotPath, snapshot);
    await snapshotHandle.close().catch(() => {});
    const header = frame(`{"v":${FORMAT_VERSION},"g":${gen}}`, LOG_MAGIC);
    const log = await this.install(this.logPath, header, this.logFlags(NEW_FILE));
    try {
      this.logId = await this.io('stat', this.logPath, () => log.stat({ bigint: true }));
    } catch (err) {
      await log.close().catch(() => {});
      throw err;
    }
    this.log = log;
    this.logOnDisk = true;
    this.logSize = header.length;
    this.gen = gen;
    this.snapshotBytes = snapshot.length;
  }

  /**
   * Puts `data` at `path` so that a crash leaves either the old file or all of the
   * new one, and returns the new file still open (writable).
   */
  private async install(path: string, data: Buffer, flags: string | number = 'w'): Promise<FileHandle> {
    // Named for this write alone: a server that lost the directory to another must not be able to
    // write into, or rename away, the other's temp file.
    const temp = tempName(path);
    const handle = await this.writeSynced(temp, data, flags);
    try {
      await this.io('rename', path, () => rename(this.inDir(temp), this.inDir(path)));
    } catch (err) {
      await handle.close().catch(() => {});
      await unlink(this.inDir(temp)).catch(() => {});
      throw err;
    }
    try {
      await this.syncOurDir();
      if (this.within === null) {
        // By path, the rename may have gone into a directory swapped in meanwhile.
        const [there, ours] = await Promise.all([
          this.io('stat', path, () => stat(path, { bigint: true })),
          this.io('stat', path, () => handle.stat({ bigint: true })),
        ]);
        if (!sameFile(there, ours)) throw replacedError(path, this.dir);
      }
      // In our directory, wherever it is now; reported durable only while the path names it,
      // as the next start will read it there.
      await this.checkDirIsOurs();
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
    return handle;
  }

  /** Syncs the data directory held open since the lock (whatever its path names now). */
  private async syncOurDir(): Promise<void> {
    const held = this.dirHandle;
    // Held from the lock until close, and nothing is written after close.
    if (held === null) throw new PersistenceError(`${this.description} is closed`);
    await this.io('fsync', this.dir, () => held.sync());
  }

  /**
   * Writes a whole new file at `path` (in the data directory, reached as inDir says)
   * and syncs it; returns it open. On failure nothing is left there.
   */
  private async writeSynced(path: string, data: Buffer, flags: string | number = 'w'): Promise<FileHandle> {
    const at = this.inDir(path);
    const handle = await this.io('open', path, () => open(at, flags, 0o600));
    try {
      await this.io('write', path, () => writeAll(handle, data, 0));
      await this.io('fsync', path, () => handle.sync());
    } catch (err) {
      await handle.close().catch(() => {});
      await unlink(at).catch(() => {});
      throw err;
    }
    return handle;
  }

  /**
   * Opens the log loaded from disk for appending, first cutting off a torn tail.
   * If that fails, the first persist compacts instead, which replaces the log.
   */
  private async reopenLog(end: number, torn: { bytes: number; why: string } | null): Promise<void> {
    let handle: FileHandle | null = null;
    try {
      handle = await this.io('open', this.logPath, () => open(this.inDir(this.logPath), this.logFlags(O_RDWR)));
      const h = handle;
      if (torn !== null) await this.io('ftruncate', this.logPath, () => h.truncate(end));
      // Synced whether cut or not: what was read may be a dead process's record that
      // never reached the disk (killed between its write and its fdatasync, without
      // syncedWrites or by an earlier release), and an O_DSYNC append syncs only its own
      // bytes. An unsynced record lost to a power cut, with a synced one after it, would
      // leave a log that refuses to load.
      await this.io('fdatasync', this.logPath, () => h.datasync());
      if (torn !== null) {
        this.say('dropped the torn end of the log: a write cut short by a crash, never acknowledged', {
          file: this.logPath,
          offset: end,
          bytes: torn.bytes,
          detail: torn.why,
        });
      }
      this.logId = await this.io('stat', this.logPath, () => h.stat({ bigint: true }));
      this.log = h;
      this.logSize = end;
    } catch (err) {
      await handle?.close().catch(() => {});
      this.say('cannot reopen the log for appending; the first write will compact instead', {
        file: this.logPath,
        error: (err as Error).message,
      });
    }
  }

  /** Temp files of compactions and locks cut short by a crash: unused, and named so that none is ever reused. */
  private async removeTempFiles(): Promise<void> {
    const names = await readdir(this.within ?? this.dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!isTempName(name)) continue;
      const what = name.startsWith(LOCK) ? 'start or lock takeover' : 'compaction';
      await unlink(this.inDir(join(this.dir, name))).then(
        () => this.say(`removed the temp file of an interrupted ${what}`, { file: join(this.dir, name) }),
        () => {},
      );
    }
  }

  /** What the directory's path names now. */
  private statDir(): Promise<FileId> {
    return this.io('stat', this.dir, () => stat(this.dir, { bigint: true }));
  }

  private async checkDirIsOurs(): Promise<void> {
    if (!sameFile(await this.statDir(), this.dirId)) {
      throw new PersistenceError(
        `${this.dir} is not the directory this server locked at start (it was removed, moved or replaced, ` +
          `or its volume unmounted); put that directory back: nothing is written into another one`,
      );
    }
  }

  private async dropLog(): Promise<void> {
    const log = this.log;
    this.log = null;
    this.logId = null;
    await log?.close().catch(() => {});
  }

  /** A file of the data directory, read through the directory held open where it can be (see inDir). */
  private async readIfExists(path: string): Promise<Buffer | null> {
    return this.io('read', path, () =>
      readFile(this.inDir(path)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return null;
        throw err;
      }),
    );
  }

  private async syncDir(dir: string): Promise<void> {
    const handle = await this.io('open', dir, () => open(dir, 'r'));
    try {
      await this.io('fsync', dir, () => handle.sync());
    } finally {
      await handle.close().catch(() => {});
    }
  }

  /**
   * Deliberately not re-created when it goes missing later: a vanished data
   * directory is often an unmounted volume, and writing into the mount point
   * underneath would hide state that comes back with the volume.
   */
  private async createDir(): Promise<void> {
    const first = await this.io('mkdir', this.dir, () => mkdir(this.dir, { recursive: true, mode: 0o700 })).catch(async (err: unknown) => {
      // mkdir says only EEXIST (or ENOTDIR, for a file further up the path).
      const found = await stat(this.dir).catch(() => null);
      if (found !== null && !found.isDirectory()) {
        throw new PersistenceError(`${this.dir} is not a directory: point --data-dir at a directory, or at a path where one can be made`);
      }
      throw err;
    });
    if (first === undefined) return;
    // A directory created just now survives a machine crash only once its parent is synced.
    for (let d = this.dir; ; d = dirname(d)) {
      await this.syncDir(dirname(d));
      if (d === first || d === dirname(d)) break;
    }
  }

  /**
   * Three locks. On Linux, first a machine-wide mutex that the kernel drops when
   * the process dies (holdMachineMutex): between servers in one network namespace
   * it decides at once, so two of them taking over the same stale LOCK at the same
   * instant cannot both win. Then a flock on the directory (holdDirFlock), which
   * the kernel also drops with its holder and which reaches servers in other
   * namespaces (containers sharing a volume). Then the LOCK file, for people and
   * for other machines (a directory on shared storage), judged by pid and host.
   * Caveats: where neither kernel lock works (no `flock` command, a file system
   * without flock), two servers in different network namespaces taking over one
   * stale LOCK in the same instant can both succeed, and so can two containers
   * with one host name (the pid is checked in the wrong PID namespace). After a
   * crash the pid may belong to an unrelated process by the time we start (likely
   * after a reboot); we then refuse although the directory is free, and the
   * message says to delete LOCK.
   */
  private async lock(): Promise<void> {
    // Claimed before the first await, so two opens in this process cannot both pass.
    if (lockedHere.has(this.dir)) throw new DataDirLockedError(this.dir, `pid ${process.pid}, this very process`);
    lockedHere.add(this.dir);
    try {
      await this.holdDir();
      await this.holdMachineMutex(this.dirId!);
      await this.holdDirFlock();
      await this.lockFile();
    } catch (err) {
      // Any may be held, or none; releasing what is not held does nothing.
      this.releaseDirFlock();
      this.releaseMachineMutex();
      await this.releaseDir();
      lockedHere.delete(this.dir);
      throw err;
    }
  }

  /** Opens the directory for the store's life; its identity is the one locked. */
  private async holdDir(): Promise<void> {
    const handle = await this.io('open', this.dir, () => open(this.dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY));
    this.dirHandle = handle;
    this.dirId = await this.io('stat', this.dir, () => handle.stat({ bigint: true }));
    if (process.platform !== 'linux') return;
    const within = `/proc/self/fd/${handle.fd}`;
    // Only where /proc shows this very directory there (it may be mounted oddly, or not at all).
    const seen = await stat(within, { bigint: true }).catch(() => null);
    if (seen !== null && sameFile(seen, this.dirId)) this.within = within;
  }

  private async releaseDir(): Promise<void> {
    const handle = this.dirHandle;
    this.dirHandle = null;
    this.within = null;
    await handle?.close().catch(() => {});
  }

  /** Where the data directory's file `path` is reached: through the held directory where it can be. */
  private inDir(path: string): string {
    return this.within === null ? path : join(this.within, basename(path));
  }

  /**
   * Binds an abstract Unix socket named after the directory's device and inode:
   * binding is atomic, fails while another process holds the name, and the name
   * vanishes with its holder, even after kill -9, so nothing is ever stale. Other
   * network namespaces (containers) do not share it; the LOCK file covers those.
   */
  private async holdMachineMutex(id: FileId): Promise<void> {
    if (process.platform !== 'linux') return;
    const server = net.createServer((socket) => socket.destroy());
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(mutexName(id.dev, id.ino), () => resolve());
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
        throw new PersistenceError(`lock ${this.dir}: ${describeErrno(err)}`, { cause: err });
      }
      throw new DataDirLockedError(this.dir, await this.describeMutexHolder());
    }
    // Anyone on the machine may connect to the name; a failed accept (EMFILE) is reported
    // as an error on the server, which must not go unhandled and stop the process.
    server.removeAllListeners('error');
    const failedAccepts = repeatReporter((fields) => this.say('the data directory mutex could not accept a connection', { file: this.dir, ...fields }));
    server.on('error', (err) => failedAccepts.failed(err.message));
    this.failedAccepts = failedAccepts;
    // Only a name: it must not keep the process alive.
    server.unref();
    this.mutex = server;
  }

  /** Who holds the mutex, as far as LOCK tells; a pid that is gone would send the operator after nothing. */
  private async describeMutexHolder(): Promise<string> {
    const holder = parseLock(await readFile(this.lockPath, 'utf8').catch(() => ''));
    // Its LOCK may not be written yet, or be unreadable: then say how to find it.
    if (holder !== null && isAlive(holder.pid)) return `pid ${holder.pid}, on this machine`;
    return 'a process on this machine; find it with: ss -xlp | grep dolmeangi-data-dir';
  }

  /**
   * A flock on the directory, for rivals the mutex cannot see (other network
   * namespaces). Where flock cannot be had, the other locks still apply, and the
   * log says what is not covered.
   */
  private async holdDirFlock(): Promise<void> {
    if (process.platform === 'win32') return;
    const lock = await holdKernelLock(this.dir);
    if (lock.state === 'held') {
      this.flock = lock;
      if (lock.unchecked !== undefined) {
        this.say('took the flock on the data directory, but could not check it from outside', { file: this.dir, reason: lock.unchecked });
      }
      return;
    }
    if (lock.state === 'busy') {
      throw new DataDirLockedError(
        this.dir,
        `a process holds a flock on it, perhaps a server in another container sharing the volume; \`lsof ${this.dir}\` run where that server runs lists the processes that have the directory open, the server among them`,
      );
    }
    this.say('no flock on the data directory; servers in other containers sharing it are kept out only by LOCK', {
      file: this.dir,
      reason: lock.reason,
    });
  }

  private releaseDirFlock(): void {
    const lock = this.flock;
    this.flock = null;
    lock?.release();
  }

  private releaseMachineMutex(): void {
    this.failedAccepts?.stop();
    this.failedAccepts = null;
    this.mutex?.close();
    this.mutex = null;
  }

  private async lockFile(): Promise<void> {
    const text = `${JSON.stringify({ pid: process.pid, host: hostname(), started: new Date().toISOString() })}\n`;
    const data = Buffer.from(text);
    // A lock released or replaced between our looks sends us round again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const created = await this.createLockFile(data);
      if (created === 'again') continue;
      if (created) {
        this.lockText = text;
        return;
      }
      const seen = await this.readIfExists(this.lockPath);
      if (seen === null) continue;
      const seenText = seen.toString('utf8');
      this.checkStale(seenText);
      // Replaced by a rename, never rewritten in place: a rival must not see it empty.
      const temp = await this.writeLockTemp(data);
      const now = await this.readIfExists(this.lockPath);
      if (now === null || now.toString('utf8') !== seenText) {
        await unlink(this.inDir(temp)).catch(() => {});
        continue;
      }
      const replaced = await this.io('rename', this.lockPath, () => rename(this.inDir(temp), this.inDir(this.lockPath))).then(
        () => true,
        (err: PersistenceError) => {
          // Our temp file went (a rival that took the directory meanwhile clears them at its start): look again.
          if (causeCode(err) === 'ENOENT') return false;
          throw err;
        },
      );
      if (!replaced) continue;
      this.say('took over a stale lock left by a server that is no longer running', {
        file: this.lockPath,
        previous: seenText.trim(),
      });
      this.lockText = text;
      return;
    }
    throw new DataDirLockedError(this.dir, `its ${this.lockPath} keeps changing; is another server starting?`);
  }

  /**
   * Creates LOCK with its content in one step: written and synced under a temp
   * name, then linked to LOCK, which fails if LOCK exists. Made by open and write,
   * it would be empty for a moment, and a kill -9 then would leave a LOCK that no
   * later start could judge. True: created; false: LOCK exists; 'again': the temp
   * file went before the link (another server's start cleared it), so try again.
   */
  private async createLockFile(data: Buffer): Promise<boolean | 'again'> {
    const temp = await this.writeLockTemp(data);
    try {
      await this.io('link', this.lockPath, () => link(this.inDir(temp), this.inDir(this.lockPath)));
      return true;
    } catch (err) {
      const code = causeCode(err);
      if (code === 'EEXIST') return false;
      if (code === 'ENOENT') return 'again';
      // A file system without hard links (FAT, some FUSE): created and written, as before.
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') return this.createLockFileInPlace(data);
      throw err;
    } finally {
      await unlink(this.inDir(temp)).catch(() => {});
    }
  }

  /** LOCK's content written and synced under a temp name of its own, for a link or rename to LOCK; returns the name. */
  private async writeLockTemp(data: Buffer): Promise<string> {
    const temp = tempName(this.lockPath);
    await (await this.writeSynced(temp, data)).close().catch(() => {});
    return temp;
  }

  private async createLockFileInPlace(data: Buffer): Promise<boolean> {
    // Synced: after a machine crash an empty LOCK could not be judged.
    const created = await this.writeSynced(this.lockPath, data, 'wx').catch((err: PersistenceError) => {
      if (causeCode(err) === 'EEXIST') return null;
      throw err;
    });
    await created?.close().catch(() => {});
    return created !== null;
  }

  /** Returns if the lock in `text` is stale; throws DataDirLockedError while its holder may still run. */
  private checkStale(text: string): void {
    const holder = parseLock(text);
    if (holder === null) {
      // Empty: left by an earlier release killed while it created LOCK (this one never leaves it so).
      const what = text === '' ? 'empty' : 'unreadable';
      throw new DataDirLockedError(this.dir, `its lock file is ${what}; delete ${this.lockPath} if no server uses the directory`);
    }
    const { pid, host, started } = holder;
    const since = started === null ? '' : `, started ${started}`;
    // A process on another machine (a shared volume) cannot be checked from here.
    if (host !== hostname()) {
      throw new DataDirLockedError(
        this.dir,
        `pid ${pid} on host ${host}${since}; delete ${this.lockPath} if that server is gone`,
      );
    }
    // Our own pid, yet not ours (this process claims a directory once, in lock()):
    // an earlier run that had the same pid, as a container's first process always does.
    if (pid === process.pid) return;
    if (isAlive(pid)) {
      throw new DataDirLockedError(
        this.dir,
        `pid ${pid}${since}; delete ${this.lockPath} only if that process is not a dolmeangi server`,
      );
    }
  }

  private async unlock(): Promise<void> {
    if (this.lockText === null) return;
    try {
      await this.unlockFile(this.lockText);
    } finally {
      // After the file: until then, a server starting now would find LOCK naming a live pid.
      this.releaseDirFlock();
      this.releaseMachineMutex();
      await this.releaseDir();
    }
  }

  private async unlockFile(text: string): Promise<void> {
    this.lockText = null;
    lockedHere.delete(this.dir);
    try {
      // Only our own: if the directory was replaced, LOCK may now be another server's.
      const seen = await readFile(this.inDir(this.lockPath), 'utf8');
      if (seen === text) await unlink(this.inDir(this.lockPath));
    } catch (err) {
      // Left behind, it names our pid, which the next start finds dead and takes over.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.say('could not remove the lock file', { file: this.lockPath, error: (err as Error).message });
      }
    }
  }

  /** Runs one file-system call, turning its failure into a PersistenceError naming the call and the file. */
  private async io<T>(op: string, path: string, call: () => Promise<T>): Promise<T> {
    try {
      this.beforeIo?.(op, path);
      return await call();
    } catch (err) {
      throw this.ioError(op, path, err);
    }
  }

  private ioBlocking<T>(op: string, path: string, call: () => T): T {
    try {
      this.beforeIo?.(op, path);
      return call();
    } catch (err) {
      throw this.ioError(op, path, err);
    }
  }

  private ioError(op: string, path: string, err: unknown): PersistenceError {
    if (err instanceof PersistenceError) return err;
    return new PersistenceError(`${op} ${shownPath(path)}: ${describeErrno(err)}`, { cause: err });
  }
}

/**
 * The mutex's abstract socket name, padded to the full 108 bytes of `sun_path`:
 * older libuv pads a shorter name with zeros and newer libuv binds it as given,
 * so an unpadded name would differ between Node versions, and two servers on
 * different versions would not exclude each other. Shown by `ss -xl` as
 * `@dolmeangi-data-dir-<dev>-<ino>___...`.
 */
function mutexName(dev: bigint, ino: bigint): string {
  return `\0${`dolmeangi-data-dir-${dev}-${ino}`.padEnd(107, '_')}`;
}

/** A LOCK's contents, or null when they are not a lock this server could have written. */
function parseLock(text: string): { pid: number; host: string; started: string | null } | null {
  let holder: { pid?: unknown; host?: unknown; started?: unknown } | null;
  try {
    holder = JSON.parse(text) as typeof holder;
  } catch {
    return null;
  }
  const { pid, host, started } = holder ?? {};
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0 || typeof host !== 'string') return null;
  return { pid, host, started: typeof started === 'string' ? started : null };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: alive but someone else's. Only ESRCH proves it is gone.
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  // A killed server stays a zombie until its parent collects it (a shell or a supervisor
  // that reaps late): it has exited and closed its files, so its lock is stale.
  return !isZombie(pid);
}

/** Named for one write alone: a server that lost the directory to another never shares a temp file with it. */
function tempName(path: string): string {
  return `${path}${TEMP_INFIX}${randomBytes(6).toString('hex')}`;
}

function isTempName(name: string): boolean {
  return [SNAPSHOT, LOG, LOCK].some(
    // Bare `.tmp`: the single temp name of earlier builds, which each compaction overwrote.
    (file) => name.startsWith(file + TEMP_INFIX) || name === `${file}.tmp`,
  );
}

/** Linux only (elsewhere false): whether `pid` has exited and waits to be reaped. Exported for tests. */
export function isZombie(pid: number, procRoot = '/proc'): boolean {
  try {
    // "pid (comm) state ...": the name may hold spaces and parentheses, so the state follows the last ')'.
    const stat = fs.readFileSync(`${procRoot}/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    if (state !== 'Z' && state !== 'X') return false;
    // The main thread shows Z once it alone has exited, while other threads (one stuck
    // in a write, say) still run: only a process down to that one thread is gone.
    return fs.readdirSync(`${procRoot}/${pid}/task`).length <= 1;
  } catch {
    return false;
  }
}

let errnoText: Map<string, string> | null = null;

/** `ENOSPC (no space left on device)`, whether the error came from the OS or a test. */
function describeErrno(err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (typeof code !== 'string') return String((err as Error)?.message ?? err);
  if (errnoText === null) {
    errnoText = new Map();
    for (const [name, text] of getSystemErrorMap().values()) errnoText.set(name, text);
  }
  const text = errnoText.get(code);
  return text === undefined ? code : `${code} (${text})`;
}

async function writeAll(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    if (bytesWritten === 0) throw new Error('the write made no progress');
    done += bytesWritten;
  }
}

function writeAllBlocking(fd: number, data: Buffer, position: number): void {
  let done = 0;
  while (done < data.length) {
    const written = fs.writeSync(fd, data, done, data.length - done, position + done);
    if (written === 0) throw new Error('the write made no progress');
    done += written;
  }
}

function marksJson(marks: Iterable<[string, bigint]>): string {
  const parts: string[] = [];
  for (const [name, mark] of marks) parts.push(`${JSON.stringify(name)}:"${mark.toString()}"`);
  return `{${parts.join(',')}}`;
}

/** Length, CRC32 and payload, after an optional 8-byte magic. */
function frame(payload: string, magic?: string): Buffer {
  const body = Buffer.from(payload, 'utf8');
  const at = magic === undefined ? 0 : MAGIC_LENGTH;
  const out = Buffer.allocUnsafe(at + HEADER_LENGTH + body.length);
  if (magic !== undefined) out.write(magic, 0, 'latin1');
  out.writeUInt32BE(body.length, at);
  out.writeUInt32BE(crc32(body), at + 4);
  body.copy(out, at + HEADER_LENGTH);
  return out;
}

type Unframed = { payload: Buffer; next: number } | { torn: string };

/**
 * Reads the record at `offset`. What an append cut short by a crash leaves is
 * reported as torn; the caller decides whether a torn record is acceptable there.
 */
function unframe(buf: Buffer, offset: number, file: string): Unframed {
  const rest = buf.length - offset;
  // A crash can leave the file longer than the data that reached the disk, zero-filled.
  if (isZero(buf, offset)) return { torn: `${rest} zero bytes where a record should be` };
  if (rest < HEADER_LENGTH) return { torn: `only ${rest} bytes of a record header` };
  const length = buf.readUInt32BE(offset);
  // Also what a tear leaves when the block holding a record's start never reached
  // the disk but a later one did: replay() tells the two apart by what follows.
  if (!plausibleLength(length)) return { torn: `a record header claiming an impossible length ${length}` };
  const end = offset + HEADER_LENGTH + length;
  if (end > buf.length) return { torn: `a record of ${length} bytes with only ${rest - HEADER_LENGTH} present` };
  const payload = checkedPayload(buf, offset, length);
  if (payload === null) {
    if (end === buf.length) {
      // A write cut short leaves zeros or stale blocks where the rest of the record
      // should be, never a whole record of the right shape: that was written in
      // full, and acknowledged numbers may stand on it, so it is damage, not a tear.
      if (wellFormed(buf.subarray(offset + HEADER_LENGTH, end))) {
        throw new StateCorruptError(
          file,
          `the last record, at byte ${offset}, is complete and well-formed but fails its checksum: damaged after it was written, not a write cut short by a crash`,
        );
      }
      return { torn: 'a checksum mismatch in the last record' };
    }
    throw new StateCorruptError(file, `checksum mismatch in the record at byte ${offset}`);
  }
  return { payload, next: end };
}

/** Whether a payload reads as a record of marks or a header, checksum aside. */
function wellFormed(payload: Buffer): boolean {
  try {
    const doc: unknown = JSON.parse(payload.toString('utf8'));
    return typeof doc === 'object' && doc !== null && !Array.isArray(doc) && ('m' in doc || 'g' in doc);
  } catch {
    return false;
  }
}

/** A file's identity: what a path names may change, this does not. */
type FileId = { readonly dev: bigint; readonly ino: bigint };

/** The system error code under a PersistenceError from io() (EEXIST, ENOENT, ...). */
function causeCode(err: unknown): string | undefined {
  return ((err as PersistenceError).cause as NodeJS.ErrnoException | undefined)?.code;
}

function replacedError(file: string, dir: string): PersistenceError {
  return new PersistenceError(`write ${file}: the file was replaced behind the server's back; nothing but this server may change ${dir} while it runs`);
}

function sameFile(a: FileId, b: FileId | null): boolean {
  return b !== null && a.dev === b.dev && a.ino === b.ino;
}

/** Where the first well-framed record (plausible length, matching checksum) after `offset` starts, if any. */
function intactRecordAfter(buf: Buffer, offset: number): number | null {
  for (let at = offset + 1; at + HEADER_LENGTH < buf.length; at++) {
    const length = buf.readUInt32BE(at);
    if (!plausibleLength(length)) continue;
    const end = at + HEADER_LENGTH + length;
    // Every payload is a JSON object: checked before the checksum, so that a damaged
    // tail whose every offset reads as a long record costs a glance per offset, not a
    // checksum over up to the rest of the file (quadratic: seconds for a megabyte).
    if (end > buf.length || buf[at + HEADER_LENGTH] !== 0x7b || buf[end - 1] !== 0x7d) continue;
    if (checkedPayload(buf, at, length) !== null) return at;
  }
  return null;
}

/** A length a record header may hold: any other is damage. */
function plausibleLength(length: number): boolean {
  return length > 0 && length <= MAX_RECORD;
}

/** The payload of the record of `length` bytes at `at`, if all of it is there and its checksum matches. */
function checkedPayload(buf: Buffer, at: number, length: number): Buffer | null {
  const end = at + HEADER_LENGTH + length;
  if (end > buf.length) return null;
  const payload = buf.subarray(at + HEADER_LENGTH, end);
  return crc32(payload) === buf.readUInt32BE(at + 4) ? payload : null;
}

function isZero(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** A record in a file that was installed whole: being torn is corruption too. */
function wholeRecord(buf: Buffer, offset: number, file: string): { payload: Buffer; next: number } {
  const r = unframe(buf, offset, file);
  if ('torn' in r) throw new StateCorruptError(file, `incomplete or damaged at byte ${offset}: ${r.torn}`);
  return r;
}

function checkMagic(buf: Buffer, magic: string, file: string, what: string): void {
  const found = buf.length < MAGIC_LENGTH ? '' : buf.toString('latin1', 0, MAGIC_LENGTH);
  if (found === magic) return;
  // The last two characters number the format: the same name with a higher number is ours, from a later release.
  const family = magic.slice(0, -2);
  if (found.startsWith(family) && /^[0-9]{2}$/.test(found.slice(-2)) && found.slice(-2) > magic.slice(-2)) {
    throw new StateCorruptError(file, `it starts with ${found}, a later format than the ${magic} this dolmeangi reads, so a newer release wrote it`, { remedy: NEWER_RELEASE });
  }
  throw new StateCorruptError(file, `not a dolmeangi ${what}: it does not start with ${magic}`);
}

function parseSnapshot(buf: Buffer, file: string): { marks: Map<string, bigint>; gen: number } {
  checkMagic(buf, SNAPSHOT_MAGIC, file, 'snapshot');
  const { payload, next } = wholeRecord(buf, MAGIC_LENGTH, file);
  if (next !== buf.length) {
    throw new StateCorruptError(file, `${buf.length - next} unexpected bytes after the snapshot`);
  }
  const doc = decode(payload, file, MAGIC_LENGTH);
  return { gen: generation(doc, file), marks: decodeMarks(doc, file, MAGIC_LENGTH, new Map()) };
}

function parseLogHeader(buf: Buffer, file: string): { gen: number; end: number } {
  checkMagic(buf, LOG_MAGIC, file, 'log');
  const { payload, next } = wholeRecord(buf, MAGIC_LENGTH, file);
  return { gen: generation(decode(payload, file, MAGIC_LENGTH), file, 0), end: next };
}

/** Applies the log's records to `marks`; returns where the good records end and why the rest was dropped. */
function replay(
  buf: Buffer,
  start: number,
  marks: Map<string, bigint>,
  file: string,
): { end: number; torn: string | null } {
  let offset = start;
  while (offset < buf.length) {
    const r = unframe(buf, offset, file);
    if ('torn' in r) {
      // Each append is synced before the next begins, so a crash can tear only the
      // last record: an intact one after the damage means the damage is not a tear.
      const later = intactRecordAfter(buf, offset);
      if (later !== null) {
        throw new StateCorruptError(
          file,
          `the record at byte ${offset} is damaged (${r.torn}), but an intact record follows at byte ${later}: not the end of a write cut short by a crash`,
        );
      }
      return { end: offset, torn: r.torn };
    }
    decodeMarks(decode(r.payload, file, offset), file, offset, marks);
    offset = r.next;
  }
  return { end: offset, torn: null };
}

type Doc = Record<string, unknown>;

function decode(payload: Buffer, file: string, offset: number): Doc {
  let doc: unknown;
  try {
    doc = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new StateCorruptError(file, `the record at byte ${offset} is not valid JSON`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new StateCorruptError(file, `the record at byte ${offset} is not a JSON object`);
  }
  const v = (doc as Doc).v;
  if (typeof v === 'number' && Number.isInteger(v) && v > FORMAT_VERSION) {
    throw new StateCorruptError(
      file,
      `the record at byte ${offset} has format version ${v}; this dolmeangi reads version ${FORMAT_VERSION}, so a newer release wrote it`,
      { remedy: NEWER_RELEASE },
    );
  }
  if (v !== FORMAT_VERSION) {
    throw new StateCorruptError(file, `the record at byte ${offset} has format version ${JSON.stringify(v)}; this dolmeangi reads version ${FORMAT_VERSION}`);
  }
  return doc as Doc;
}

/**
 * A temp file's name without its random part, so that a failure repeated at every
 * retry reads the same each time: the log then repeats it only once a minute, and
 * INFO's and /readyz's reason stays put.
 */
function shownPath(path: string): string {
  const i = path.lastIndexOf(TEMP_INFIX);
  // Only our own names: a data directory may be called x.tmp-1.
  if (i === -1 || !/^[0-9a-f]{12}$/.test(path.slice(i + TEMP_INFIX.length))) return path;
  return `${path.slice(0, i)}${TEMP_INFIX}*`;
}

/** Snapshots start at generation 1; a log may be of generation 0, the empty one put before the first snapshot. */
function generation(doc: Doc, file: string, lowest = 1): number {
  const g = doc.g;
  if (typeof g !== 'number' || !Number.isSafeInteger(g) || g < lowest) {
    throw new StateCorruptError(file, `bad generation ${JSON.stringify(g)}`);
  }
  return g;
}

function decodeMarks(doc: Doc, file: string, offset: number, into: Map<string, bigint>): Map<string, bigint> {
  const m = doc.m;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) {
    throw new StateCorruptError(file, `the record at byte ${offset} has no marks object`);
  }
  for (const [name, text] of Object.entries(m)) {
    const mark = typeof text === 'string' ? parseUnsigned(text) : undefined;
    if (mark === undefined || mark > END) {
      throw new StateCorruptError(
        file,
        `the record at byte ${offset} gives ${JSON.stringify(name)} the mark ${JSON.stringify(text)}, not a decimal integer in 0..2^63`,
      );
    }
    into.set(name, mark);
  }
  return into;
}
