/**
 * Reads the TLS port's certificate, key and CA, and checks each on its own, so
 * that a bad file is named by the option (or environment variable) it came from
 * rather than surfacing as OpenSSL's words when the port opens, or not at all:
 * OpenSSL takes a CA file with no certificate in it without a word, and the port
 * would then refuse every client.
 */
import { X509Certificate, constants, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import type { Config } from '../config.js';
import { ConfigError } from '../errors.js';

type TlsFileKey = 'tlsCa' | 'tlsCert' | 'tlsKey';

const FLAGS: Record<TlsFileKey, string> = { tlsCa: '--tls-ca', tlsCert: '--tls-cert', tlsKey: '--tls-key' };

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
/** What a CA file may hold: OpenSSL also takes its own "trusted" form (`openssl x509 -addtrust`), which X509Certificate does not read. */
const PEM_CA_CERTIFICATE = /-----BEGIN (TRUSTED )?CERTIFICATE-----[\s\S]*?-----END \1CERTIFICATE-----/g;

export async function readTlsFiles(config: Config): Promise<tls.TlsOptions> {
  // Named as given: the flag, or the environment variable it came from.
  const option = (key: TlsFileKey) => config.sources[key] ?? FLAGS[key];
  const read = async (key: TlsFileKey) => {
    const file = config[key];
    if (file === null) return undefined;
    try {
      return await readFile(file);
    } catch (err) {
      throw new ConfigError(option(key), `cannot read ${file}: ${(err as Error).message}`);
    }
  };
  const ca = await read('tlsCa');
  const cert = await read('tlsCert');
  const key = await read('tlsKey');

  if (cert !== undefined) {
    // X509Certificate also reads DER, which the TLS context does not.
    const text = cert.toString('latin1');
    if (text.match(PEM_CERTIFICATE) === null) {
      const other = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(text)?.[1];
      const hint =
        text.trim() === ''
          ? 'it is empty'
          : other === undefined
            ? 'a DER one converts with openssl x509 -inform der -in <file> -out <file>.pem'
            : `it holds a ${other}`;
      throw new ConfigError(option('tlsCert'), `${config.tlsCert} holds no PEM certificate ("-----BEGIN CERTIFICATE-----"); ${hint}`);
    }
    try {
      new X509Certificate(cert);
    } catch (err) {
      throw new ConfigError(option('tlsCert'), `${config.tlsCert} holds no usable PEM certificate: ${(err as Error).message}`);
    }
  }
  if (key !== undefined) {
    try {
      createPrivateKey(key);
    } catch (err) {
      throw new ConfigError(
        option('tlsKey'),
        `${config.tlsKey} holds no usable PEM private key (an unencrypted one: no passphrase can be given): ${(err as Error).message}`,
      );
    }
  }
  if (ca !== undefined) checkCaFile(ca, config.tlsCa!, option('tlsCa'));

  const options: tls.TlsOptions = {
    cert,
    key,
    // With a CA, clients must present a certificate it signed (mutual TLS); the
    // listener refuses the others itself, with a reply (SequencerServer.listenTls).
    ...(ca ? { ca, requestCert: true } : {}),
    minVersion: 'TLSv1.2',
    // Nothing needs it, and with the certificate checked once, after the first
    // handshake, a renegotiation must not be able to present another.
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
  };
  // Each file is sound on its own by now: what is left is mostly whether they go together.
  try {
    tls.createSecureContext(options);
  } catch (err) {
    const message = (err as Error).message;
    if (/key values mismatch/i.test(message)) {
      throw new ConfigError(option('tlsKey'), `the key (${config.tlsKey}) does not go with the certificate (${config.tlsCert}): ${message}`);
    }
    const files = `the certificate (${config.tlsCert}), key (${config.tlsKey})${config.tlsCa === null ? '' : ` or CA (${config.tlsCa})`}`;
    throw new ConfigError(option('tlsCert'), `${files} cannot be used together: ${message}`);
  }
  return options;
}

function checkCaFile(ca: Buffer, file: string, option: string): void {
  const blocks = ca.toString('latin1').match(PEM_CA_CERTIFICATE) ?? [];
  if (blocks.length === 0) {
    throw new ConfigError(option, `${file} holds no PEM certificate: a CA file is one or more "-----BEGIN CERTIFICATE-----" blocks`);
  }
  blocks.forEach((block, i) => {
    // OpenSSL's trusted form is left to OpenSSL.
    if (block.startsWith('-----BEGIN TRUSTED')) return;
    try {
      new X509Certificate(block);
    } catch (err) {
      throw new ConfigError(option, `certificate ${i + 1} of ${blocks.length} in ${file} is not usable: ${(err as Error).message}`);
    }
  });
}
