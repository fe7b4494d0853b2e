// Package upstream is cerbai's forwarding handler: it checks what a client
// sent, rewrites the request for the configured LLM endpoint, puts the
// access token on it, and streams the answer back as it arrives, sending
// the request once more with a new token when the upstream rejects the
// old one. New builds the handler; NewTransport builds the shared
// transport it sends on.
package upstream

import "context"

// TokenSource gives the forwarder access tokens. It is the only thing the
// forwarder knows of token caching.
type TokenSource interface {
	// Token returns a usable access token, or an error when none can be had
	// within the source's own wait bound.
	Token(ctx context.Context) (string, error)
	// Invalidate drops token if it is still the current one.
	Invalidate(token string)
}
