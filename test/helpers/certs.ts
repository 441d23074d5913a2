/**
 * Throwaway TLS material for tests, made with the system's `openssl` CLI in a
 * fresh temp dir at test time: a CA, a server certificate for 127.0.0.1 and
 * localhost, a client certificate the CA signed, and a client certificate from
 * an unrelated CA (which a mutual-TLS server must refuse). Nothing here is ever
 * written inside the repository.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCerts {
  readonly dir: string;
  /** Paths of PEM files. */
  readonly caCert: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** Signed by a CA the server does not trust. */
  readonly strangerCert: string;
  readonly strangerKey: string;
  remove(): Promise<void>;
}

// A config of our own keeps the result independent of the distribution's openssl.cnf.
const CONFIG = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
`;

// P-256 keys: generated in milliseconds, accepted by node, openssl and redis-cli alike.
const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function makeCerts(): Promise<TestCerts> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dolmeangi-certs-'));
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => run('openssl', args, { cwd: dir, timeout: 30_000 });
  try {
    await writeFile(f('openssl.cnf'), CONFIG);
    const cnf = ['-config', f('openssl.cnf')];
    const selfSigned = (name: string, cn: string) =>
      openssl('req', ...cnf, '-x509', ...KEY, '-keyout', f(`${name}.key`), '-out', f(`${name}.crt`), '-days', '2', '-subj', `/CN=${cn}`, '-extensions', 'ca');
    const issue = async (name: string, cn: string, ca: string, ext: string) => {
      await openssl('req', ...cnf, '-new', ...KEY, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`);
      await openssl(
        'x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${ca}.crt`), '-CAkey', f(`${ca}.key`), '-set_serial', String(Date.now()),
        '-days', '2', '-out', f(`${name}.crt`), '-extfile', f('openssl.cnf'), '-extensions', ext,
      );
    };
    await selfSigned('ca', 'dolmeangi test CA');
    await selfSigned('stranger-ca', 'unrelated CA');
    await issue('server', 'localhost', 'ca', 'server');
    await issue('client', 'dolmeangi test client', 'ca', 'client');
    await issue('stranger', 'stranger client', 'stranger-ca', 'client');
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    dir,
    caCert: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    strangerCert: f('stranger.crt'),
    strangerKey: f('stranger.key'),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
