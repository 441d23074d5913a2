/**
 * Typed errors shared by the server, the client and the CLI.
 * Every message says what happened and what to do about it.
 */

/** Base of every error this package throws on purpose. `code` is stable; match on it. */
export class DolmeangiError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A command-line option or environment variable has a value we cannot use. */
export class ConfigError extends DolmeangiError {
  readonly option: string;
  constructor(option: string, message: string) {
    super('CONFIG', `${option}: ${message}`);
    this.option = option;
  }
}

/** Durable state cannot be read: the file is torn, corrupt or from a newer version. */
export class StateCorruptError extends DolmeangiError {
  readonly file: string;
  /**
   * `remedy`: what to do, from the store that knows (the default is for a damaged file).
   * `kind`: what `file` is; a group's marks are etcd keys, loaded when a member starts to lead.
   */
  constructor(file: string, detail: string, opts: { remedy?: string; kind?: 'state file' | 'etcd key' } = {}) {
    const kind = opts.kind ?? 'state file';
    super(
      'STATE_CORRUPT',
      `${kind} ${file} is unreadable (${detail}); refusing to ${kind === 'etcd key' ? 'serve' : 'start'} rather than reset numbers. ` +
        (opts.remedy ??
          'Restore it from a backup and start with --initial above the highest number handed out since, ' +
            'or move it away only if you are sure no number from it was ever used.'),
    );
    this.file = file;
  }
}

/** Another server holds the data directory. */
export class DataDirLockedError extends DolmeangiError {
  readonly dir: string;
  constructor(dir: string, holder: string) {
    super(
      'DATA_DIR_LOCKED',
      `data directory ${dir} is in use by another server (${holder}); stop it, or give this one its own --data-dir`,
    );
    this.dir = dir;
  }
}

/** The store could not make a reservation durable; the server retries by itself. */
export class PersistenceError extends DolmeangiError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('PERSISTENCE', reason, options);
  }
}

/**
 * A store write was refused because this node is no longer the leader (fencing).
 * The node must stop serving and reload state if it is elected again.
 */
export class FencedError extends DolmeangiError {
  constructor(detail: string) {
    super('FENCED', `leadership lost: ${detail}`);
  }
}

/** A port could not be bound. */
export class ListenError extends DolmeangiError {
  constructor(what: string, host: string, port: number, cause: unknown) {
    const reason = (cause as NodeJS.ErrnoException)?.code === 'EADDRINUSE'
      ? 'the address is already in use; stop the other process or choose another port'
      : String((cause as Error)?.message ?? cause);
    super('LISTEN', `cannot listen for ${what} on ${host}:${port}: ${reason}`, { cause });
  }
}
