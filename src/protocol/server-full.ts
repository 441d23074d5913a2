/**
 * What a server at its connection cap sends, unasked, before it closes: Redis's
 * own words, so Redis clients recognise it, and the client library knows that
 * no request on that connection was read.
 */
export const SERVER_FULL = 'max number of clients reached';
