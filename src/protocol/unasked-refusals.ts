/**
 * What a server sends unasked to a new connection it will not serve, before it
 * closes it: the client library knows from these that no request on that
 * connection was acted on.
 */

/** At its connection cap: Redis's own words, so Redis clients recognise it. */
export const SERVER_FULL = 'max number of clients reached';

/**
 * On the TLS port, to a client whose certificate mutual TLS (--tls-ca) does not
 * accept: another try with the same certificate is refused again.
 */
export const CERTIFICATE_REFUSED = 'client certificate not accepted';
