/**
 * What the TLS port sends, unasked, to a client whose certificate mutual TLS
 * (--tls-ca) does not accept, before it closes without reading: the client
 * library knows from it that no request was read, and that another try with
 * the same certificate is refused again.
 */
export const CERTIFICATE_REFUSED = 'client certificate not accepted';
