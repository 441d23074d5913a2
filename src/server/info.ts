/**
 * The INFO text: `key:value` lines in sections, as Redis formats it, so Redis
 * tools can read it. One `sequence:` line per sequence.
 */
import type { SequenceSnapshot } from '../core/sequencer.js';
import { END } from '../core/limits.js';

export interface InfoFacts {
  version: string;
  mode: 'in-memory' | 'durable' | 'group';
  role: string;
  uptimeSeconds: number;
  tcpPort: number;
  tlsPort: number | null;
  connectedClients: number;
  maxConnections: number;
  rejectedConnections: number;
  totalConnections: number;
  store: string;
  commitThread: 'main' | 'workers' | null;
  persistence: 'ok' | 'failing' | 'none';
  persistenceError: string | null;
  /** null in memory mode, where nothing is reserved (--reserve is ignored there). */
  reserve: bigint | null;
  extra: Array<[string, string]>;
  /** Calls by command name (lower case, `unknown` for the rest), and error replies by code. */
  commandCalls: Array<[string, number]>;
  errorReplies: Array<[string, number]>;
  sequences: SequenceSnapshot[];
}

export function renderInfo(f: InfoFacts): string {
  const lines: string[] = [
    '# Server',
    `version:${f.version}`,
    `mode:${f.mode}`,
    `role:${f.role}`,
    `uptime_in_seconds:${f.uptimeSeconds}`,
    `tcp_port:${f.tcpPort}`,
  ];
  if (f.tlsPort !== null) lines.push(`tls_port:${f.tlsPort}`);
  for (const [k, v] of f.extra) lines.push(`${k}:${v}`);
  lines.push(
    '',
    '# Clients',
    `connected_clients:${f.connectedClients}`,
    `max_clients:${f.maxConnections}`,
    `rejected_connections:${f.rejectedConnections}`,
    `total_connections_received:${f.totalConnections}`,
    '',
    '# Persistence',
    `store:${f.store}`,
  );
  if (f.commitThread !== null) lines.push(`commit_thread:${f.commitThread}`);
  lines.push(`persistence:${f.persistence}`);
  if (f.persistenceError !== null) lines.push(`persistence_error:${f.persistenceError}`);
  lines.push(`reserve:${f.reserve ?? 'none'}`, '', '# Stats');
  let calls = 0;
  for (const [, n] of f.commandCalls) calls += n;
  let issued = 0n;
  for (const s of f.sequences) issued += s.issued;
  lines.push(`total_commands_processed:${calls}`, `total_issued_numbers:${issued}`);
  for (const [name, n] of f.commandCalls) if (n > 0) lines.push(`cmdstat_${name}:calls=${n}`);
  for (const [code, n] of f.errorReplies) lines.push(`errorstat_${code}:count=${n}`);
  lines.push('', '# Sequences', `sequences:${f.sequences.length}`);
  for (const s of f.sequences) {
    const durable = s.durableMark === END && f.mode === 'in-memory' ? 'none' : String(s.durableMark);
    lines.push(`sequence:name=${s.name},current=${s.next},durable_mark=${durable},issued=${s.issued}`);
  }
  return lines.join('\r\n') + '\r\n';
}
