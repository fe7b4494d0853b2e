// Package tokens obtains OAuth2 access tokens with the client_credentials
// grant over mutual TLS and keeps them: a per-replica cache in front
// (Cache), optionally a Redis cache shared by replicas behind it (Shared),
// and the token service client at the end (Client).
//
// Time rules for a token sent at S with lifetime L and configured TTL T:
// skew = min(30s, L/10); fresh until S + min(T, L − skew); usable until
// S + L − skew. Fresh tokens are served, stale ones trigger a refresh, and
// a token that is not usable is never handed out.
package tokens
