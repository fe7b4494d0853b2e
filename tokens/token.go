package tokens

import (
	"context"
	"sync/atomic"
	"time"
)

const (
	// DefaultTTL is the freshness cap (--token-cache-ttl) when none is set.
	DefaultTTL = 5 * time.Minute
	// MaxLifetime is the longest lifetime a token is given; longer
	// expires_in values are clamped to it.
	MaxLifetime = 365 * 24 * time.Hour
	// maxSkew bounds how early a token stops being usable before it expires.
	maxSkew = 30 * time.Second
)

// Sources of a Token: where this replica got it.
const (
	SourceTokenService = "token_service"
	SourceRedis        = "redis"
)

// Param is one extra field of the token request form.
type Param struct{ Key, Value string }

// Token is one access token and its times (see the time rules in doc.go).
type Token struct {
	Value       Secret
	SentAt      time.Time     // when the token request was sent
	Lifetime    time.Duration // expires_in, or TTL when absent; clamped to 1 year
	FreshUntil  time.Time     // SentAt + min(TTL, Lifetime-skew)
	UsableUntil time.Time     // SentAt + Lifetime - skew
	Source      string        // "token_service" or "redis": where this replica got it
}

// NewToken applies the time rules to a token whose request was sent at
// sentAt. A lifetime ≤ 0 means the response had no expires_in: the token
// then lives ttl. A ttl ≤ 0 means DefaultTTL. Source is left empty.
func NewToken(value string, sentAt time.Time, lifetime, ttl time.Duration) Token {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if lifetime <= 0 {
		lifetime = ttl
	}
	lifetime = min(lifetime, MaxLifetime)
	// The skew makes a token unusable a little before the token service
	// says it expires, to absorb clock differences and time in transit.
	usable := lifetime - min(maxSkew, lifetime/10)
	return Token{
		Value:       Secret(value),
		SentAt:      sentAt,
		Lifetime:    lifetime,
		FreshUntil:  sentAt.Add(min(ttl, usable)),
		UsableUntil: sentAt.Add(usable),
	}
}

// Fresh reports whether t can be served without a refresh being due.
func (t Token) Fresh(now time.Time) bool {
	return t.Value != "" && now.Before(t.FreshUntil)
}

// Usable reports whether t may still be sent at all.
func (t Token) Usable(now time.Time) bool {
	return t.Value != "" && now.Before(t.UsableUntil)
}

// Fetcher obtains a new token. have is the caller's newest token (zero if
// none); a Fetcher with a shared store uses it to find a fresher one.
type Fetcher interface {
	Fetch(ctx context.Context, have Token) (Token, error)
}

// Stats are counters the lead renders as Prometheus metrics. Plain atomics.
type Stats struct {
	FetchOK, FetchError    atomic.Uint64 // requests to the token service by result
	LocalHits, LocalMisses atomic.Uint64 // per-replica cache lookups
	RedisHits, RedisMisses atomic.Uint64 // shared cache lookups
	RedisUp                atomic.Bool   // last Redis operation succeeded
}
