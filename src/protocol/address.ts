/** `host:port` server addresses, as users write them and as NOTLEADER replies carry them. */

export const DEFAULT_PORT = 10001;

export interface Address {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses `host:port`, `[ipv6]:port`, or a bare host (port `defaultPort`; null
 * when the port must be given). Returns null for anything else, such as an
 * empty host or a port out of range.
 */
export function parseAddress(text: string, defaultPort: number | null = DEFAULT_PORT): Address | null {
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]+))(?::(\d{1,5}))?$/.exec(text.trim());
  if (m === null) return null;
  const port = m[3] === undefined ? defaultPort : Number(m[3]);
  if (port === null || port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2])!, port };
}

export function formatAddress(a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
