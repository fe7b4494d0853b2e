package tokens

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnavailable is wrapped by Cache.Token's errors when no usable token
// can be had in time.
var ErrUnavailable = errors.New("no usable token")

const (
	defaultWait    = 10 * time.Second
	backoffInitial = time.Second
	backoffMax     = 60 * time.Second
	// backoffFloor keeps full jitter from retrying at once in a tight loop.
	backoffFloor = 100 * time.Millisecond
	// minRefreshGap spaces background refreshes when a new token is
	// already stale (fetch slower than the fresh period).
	// Limitation: a token that lives under about 2s is refreshed late.
	minRefreshGap = time.Second
	// invalidateGap is the shortest time between two tokens dropped by
	// Invalidate: at most one token fetch per gap comes from rejections.
	invalidateGap = 5 * time.Second
	// flightTimeout stops a Fetcher that never returns from wedging the
	// cache; Client and Shared return well before it.
	flightTimeout = 2 * time.Minute
)

// CacheConfig configures a Cache. Zero values mean the stated defaults.
type CacheConfig struct {
	Fetcher Fetcher        // required: a *Client or a *Shared
	Wait    time.Duration  // --token-wait: longest a request waits for a token; 0 → 10s
	Clock   Clock          // nil → real time
	Logger  *slog.Logger   // nil → discard
	Stats   *Stats         // nil → a private one
	Rand    func() float64 // jitter source in [0,1); nil → math/rand/v2
}

// Cache is the per-replica token cache. Token reads an atomic snapshot;
// fetching is done by at most one goroutine at a time (a "flight") that
// requests join; Start adds the warm-up and refresh-ahead loop.
type Cache struct {
	fetcher Fetcher
	wait    time.Duration
	clock   Clock
	log     *slog.Logger
	stats   *Stats
	rand    func() float64
	kick    chan struct{} // wakes the background loop to re-plan

	cur      atomic.Pointer[entry] // current token; nil when none
	fetching atomic.Bool           // a flight is in the air
	retryNS  atomic.Int64          // requests start no fetch before this (unix ns)

	mu        sync.Mutex // guards the fields below; held only briefly
	inflight  *flight    // the fetch in progress, or nil
	lastErr   error      // last fetch failure; nil after a success
	failures  int        // consecutive failures, for the backoff
	retryAt   time.Time  // end of the backoff after lastErr
	refreshAt time.Time  // when the background loop refreshes the current token
	have      Token      // newest token fetched, kept after Invalidate
	dropped   time.Time  // when Invalidate last dropped a token
}

type entry struct {
	value string // tok.Value revealed once, so the read path does no work
	tok   Token
}

type flight struct {
	done chan struct{} // closed when tok and err are set
	tok  Token
	err  error
}

// NewCache returns a Cache around cfg.Fetcher. Call Start to warm it up
// and keep it refreshed; without Start, requests fetch on demand.
func NewCache(cfg CacheConfig) *Cache {
	c := &Cache{
		fetcher: cfg.Fetcher,
		wait:    cmpOr(cfg.Wait, defaultWait),
		clock:   clockOrReal(cfg.Clock),
		log:     loggerOrDiscard(cfg.Logger).With("component", "token_cache"),
		stats:   cfg.Stats,
		rand:    cfg.Rand,
		kick:    make(chan struct{}, 1),
	}
	if c.stats == nil {
		c.stats = new(Stats)
	}
	if c.rand == nil {
		c.rand = rand.Float64
	}
	return c
}

// Token returns a usable token. A fresh token is returned from the
// snapshot without locking or allocating; a stale but usable one is
// returned too and a refresh started. With no usable token, Token waits
// for the fetch in flight at most the configured Wait; its error then
// wraps ErrUnavailable (or is ctx's error when ctx ends first).
func (c *Cache) Token(ctx context.Context) (string, error) {
	now := c.clock.Now()
	if e := c.cur.Load(); e != nil && e.tok.Usable(now) {
		c.stats.LocalHits.Add(1)
		if !e.tok.Fresh(now) {
			c.refreshStale(now)
		}
		return e.value, nil
	}
	c.stats.LocalMisses.Add(1)
	return c.await(ctx)
}

// refreshStale starts a fetch for a stale token unless one is in the air
// or the backoff forbids it; the atomics keep the common case lock-free.
func (c *Cache) refreshStale(now time.Time) {
	if c.fetching.Load() || now.UnixNano() < c.retryNS.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight == nil && !now.Before(c.retryAt) {
		c.startLocked()
	}
}

// await waits for a usable token: the one a concurrent fetch just stored,
// the one the fetch in flight brings, or none within c.wait.
func (c *Cache) await(ctx context.Context) (string, error) {
	c.mu.Lock()
	// Second look under the lock: a flight may have landed between the
	// snapshot read in Token and here. Without it, a request would start
	// a second fetch right after the first one stored its token.
	now := c.clock.Now()
	if e := c.cur.Load(); e != nil && e.tok.Usable(now) {
		c.mu.Unlock()
		return e.value, nil
	}
	f := c.inflight
	if f == nil && c.lastErr != nil && now.Before(c.retryAt) {
		// The last fetch failed recently: answer at once instead of
		// making each request of a burst wait.
		err := c.lastErr
		c.mu.Unlock()
		return "", fmt.Errorf("get token: %w: %w", ErrUnavailable, err)
	}
	if f == nil {
		f = c.startLocked()
	}
	c.mu.Unlock()

	timer := c.clock.NewTimer(c.wait)
	defer timer.Stop()
	select {
	case <-f.done:
		if f.err != nil {
			return "", fmt.Errorf("get token: %w: %w", ErrUnavailable, f.err)
		}
		if !f.tok.Usable(c.clock.Now()) {
			return "", fmt.Errorf("get token: %w: the new token is no longer usable",
				ErrUnavailable)
		}
		return f.tok.Value.Reveal(), nil
	case <-timer.C():
		return "", fmt.Errorf("get token: %w within %s", ErrUnavailable, c.wait)
	case <-ctx.Done():
		return "", fmt.Errorf("get token: %w", ctx.Err())
	}
}

// startLocked starts a flight. The fetch is detached from every request:
// whoever leaves, the fetch goes on for the others.
func (c *Cache) startLocked() *flight {
	f := &flight{done: make(chan struct{})}
	c.inflight = f
	c.fetching.Store(true)
	go c.fly(f, c.have)
	return f
}

func (c *Cache) fly(f *flight, have Token) {
	ctx, cancel := context.WithTimeout(context.Background(), flightTimeout)
	defer cancel()
	start := c.clock.Now()
	tok, err := c.fetcher.Fetch(ctx, have)
	now := c.clock.Now()
	if err == nil && !tok.Usable(now) {
		err = errors.New("fetch token: fetched token is not usable")
	}
	f.tok, f.err = tok, err

	c.mu.Lock()
	var retryIn time.Duration
	if err != nil {
		retryIn = c.failedLocked(now, err)
	} else {
		c.storeLocked(now, tok)
	}
	c.inflight = nil
	c.fetching.Store(false)
	c.mu.Unlock()

	// Logged before waking anyone, so the lines are in order with what
	// callers see.
	if err != nil {
		c.log.Warn("token fetch failed", "error", err.Error(), "retry_in", retryIn.String())
	} else {
		c.log.Info("token refreshed", "ttl", tok.UsableUntil.Sub(now).String(),
			"backend", tok.Source, "duration_ms", now.Sub(start).Milliseconds())
	}
	c.wake() // before close, so a loop waiting on f.done finds the kick and drains it
	close(f.done)
}

func (c *Cache) storeLocked(now time.Time, tok Token) {
	c.cur.Store(&entry{value: tok.Value.Reveal(), tok: tok})
	c.have = tok
	c.lastErr, c.failures, c.retryAt = nil, 0, time.Time{}
	c.retryNS.Store(0)
	// Refresh ahead at 80% of the fresh period, ±10%, so replicas that
	// got the same token do not all refresh at the same instant.
	fresh := tok.FreshUntil.Sub(tok.SentAt)
	ahead := time.Duration(float64(fresh) * 0.8 * (0.9 + 0.2*c.rand()))
	c.refreshAt = maxTime(tok.SentAt.Add(ahead), now.Add(minRefreshGap))
}

func (c *Cache) failedLocked(now time.Time, err error) time.Duration {
	c.failures++
	d := backoff(c.failures, c.rand())
	c.lastErr, c.retryAt = err, now.Add(d)
	c.retryNS.Store(c.retryAt.UnixNano())
	return d
}

// backoff is the wait after the n-th consecutive failure: full jitter over
// an exponential bound (1s, 2s, 4s, ... capped at 60s); r is in [0,1).
func backoff(n int, r float64) time.Duration {
	bound := backoffMax
	if n < 7 { // 1s << 6 = 64s is already past the cap
		bound = min(backoffInitial<<(n-1), backoffMax)
	}
	return max(time.Duration(r*float64(bound)), backoffFloor)
}

func (c *Cache) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Invalidate drops token if it is still the current one, so that the next
// request fetches a new one; a late report about an older token is ignored,
// and so is a rejection within invalidateGap of the last token dropped.
func (c *Cache) Invalidate(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.cur.Load(); e == nil || e.value != token {
		return
	}
	// An upstream that rejects every token (a configuration error, not a
	// revoked token) would otherwise make every request fetch one.
	now := c.clock.Now()
	if !c.dropped.IsZero() && now.Sub(c.dropped) < invalidateGap {
		c.log.Debug("token rejected again soon after a new one; keeping it")
		return
	}
	c.dropped = now
	c.cur.Store(nil)
	c.refreshAt = time.Time{}
	c.log.Info("token invalidated")
	c.wake()
}

// Usable reports until when the current token is usable, and whether it
// is now (for readiness and the "seconds until unusable" gauge).
func (c *Cache) Usable() (until time.Time, ok bool) {
	e := c.cur.Load()
	if e == nil {
		return time.Time{}, false
	}
	return e.tok.UsableUntil, e.tok.Usable(c.clock.Now())
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
