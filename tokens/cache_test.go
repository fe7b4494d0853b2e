package tokens

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chanFetcher hands each Fetch to the test on calls and returns what the
// test replies, so a test decides when and how each fetch ends.
type chanFetcher struct {
	calls chan fetchCall
	n     atomic.Int64
}

type fetchCall struct {
	ctx   context.Context
	have  Token
	reply chan fetchResult
}

type fetchResult struct {
	tok Token
	err error
}

func newChanFetcher() *chanFetcher { return &chanFetcher{calls: make(chan fetchCall)} }

func (f *chanFetcher) Fetch(ctx context.Context, have Token) (Token, error) {
	f.n.Add(1)
	call := fetchCall{ctx, have, make(chan fetchResult, 1)}
	f.calls <- call
	r := <-call.reply
	return r.tok, r.err
}

// next waits for the next fetch (10s of real time at most).
func (f *chanFetcher) next(t *testing.T) fetchCall {
	t.Helper()
	select {
	case c := <-f.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no fetch started")
		return fetchCall{}
	}
}

// funcFetcher answers each Fetch at once with f(n), n counting from 1.
type funcFetcher struct {
	n atomic.Int64
	f func(n int64, have Token) (Token, error)
}

func (f *funcFetcher) Fetch(_ context.Context, have Token) (Token, error) {
	return f.f(f.n.Add(1), have)
}

// tokenAt is a token sent now with a 1h lifetime and a 5m TTL: fresh for
// 5m (refresh ahead at 4m), usable for 59m30s.
func tokenAt(clk Clock, value string) Token {
	tok := NewToken(value, clk.Now(), time.Hour, 5*time.Minute)
	tok.Source = SourceTokenService
	return tok
}

func fixedRand(r float64) func() float64 { return func() float64 { return r } }

func newTestCache(clk Clock, f Fetcher) *Cache {
	return NewCache(CacheConfig{Fetcher: f, Clock: clk, Rand: fixedRand(0.5)})
}

func mustToken(t *testing.T, c *Cache, want string) {
	t.Helper()
	got, err := c.Token(context.Background())
	if err != nil || got != want {
		t.Fatalf("Token: got %q, %v; want %q", got, err, want)
	}
}

func TestCache_TokenFreshAllocatesNothing(t *testing.T) {
	clk := newFakeClock()
	f := &funcFetcher{f: func(int64, Token) (Token, error) { return tokenAt(clk, "t"), nil }}
	c := newTestCache(clk, f)
	mustToken(t, c, "t")
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := c.Token(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("got %v allocations per fresh Token call, want 0", allocs)
	}
}

func BenchmarkCache_TokenFresh(b *testing.B) {
	f := &funcFetcher{f: func(int64, Token) (Token, error) {
		return tokenAt(RealClock{}, "bench-token"), nil
	}}
	c := NewCache(CacheConfig{Fetcher: f})
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Token(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestCache_ConcurrentMissesShareOneFetch(t *testing.T) {
	const requests = 200
	clk := newFakeClock()
	f := newChanFetcher()
	c := newTestCache(clk, f)
	results := make(chan string, requests)
	for range requests {
		go func() {
			tok, err := c.Token(context.Background())
			if err != nil {
				tok = err.Error()
			}
			results <- tok
		}()
	}
	call := f.next(t)
	clk.waitTimerCount(t, requests) // every request is waiting (its Wait timer is set)
	call.reply <- fetchResult{tok: tokenAt(clk, "shared")}
	for range requests {
		if got := <-results; got != "shared" {
			t.Errorf("got %q, want shared", got)
		}
	}
	if got := f.n.Load(); got != 1 {
		t.Errorf("got %d fetches, want 1", got)
	}
}

func TestCache_WaitIsBoundedThenUnavailable(t *testing.T) {
	clk := newFakeClock()
	f := newChanFetcher()
	c := NewCache(CacheConfig{Fetcher: f, Clock: clk, Wait: 3 * time.Second})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Token(context.Background())
		errc <- err
	}()
	call := f.next(t)
	if got := clk.waitTimerCount(t, 1)[0].Sub(clk.Now()); got != 3*time.Second {
		t.Errorf("got wait %s, want 3s", got)
	}
	clk.Advance(3 * time.Second)
	if err := <-errc; !errors.Is(err, ErrUnavailable) {
		t.Errorf("got %v, want an error wrapping ErrUnavailable", err)
	}
	call.reply <- fetchResult{tok: tokenAt(clk, "late")}
	mustToken(t, c, "late") // the fetch went on and its token is kept
}

func TestCache_CallerLeavingDoesNotAbortFetch(t *testing.T) {
	clk := newFakeClock()
	f := newChanFetcher()
	c := newTestCache(clk, f)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Token(ctx)
		errc <- err
	}()
	call := f.next(t)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if err := call.ctx.Err(); err != nil {
		t.Errorf("fetch context ended with its caller: %v", err)
	}
	got := make(chan string, 1)
	go func() {
		tok, _ := c.Token(context.Background())
		got <- tok
	}()
	clk.waitTimerCount(t, 1) // the second request waits on the same fetch
	call.reply <- fetchResult{tok: tokenAt(clk, "t1")}
	if tok := <-got; tok != "t1" {
		t.Errorf("got %q, want t1", tok)
	}
	if n := f.n.Load(); n != 1 {
		t.Errorf("got %d fetches, want 1", n)
	}
}

func TestCache_FailedFetchIsRememberedUntilBackoffEnds(t *testing.T) {
	clk := newFakeClock()
	f := &funcFetcher{f: func(int64, Token) (Token, error) {
		return Token{}, errors.New("fetch token: connection refused")
	}}
	c := newTestCache(clk, f) // rand 0.5: first backoff 500ms, second 1s
	for i, step := range []struct {
		advance time.Duration
		fetches int64
	}{{0, 1}, {0, 1}, {499 * time.Millisecond, 1}, {time.Millisecond, 2}, {999 * time.Millisecond, 2},
		{time.Millisecond, 3}} {
		clk.Advance(step.advance)
		_, err := c.Token(context.Background())
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("step %d: got %v, want ErrUnavailable with the fetch error", i, err)
		}
		if got := f.n.Load(); got != step.fetches {
			t.Errorf("step %d: got %d fetches, want %d", i, got, step.fetches)
		}
	}
}

func TestCache_RefreshAheadServesOldToken(t *testing.T) {
	clk := newFakeClock()
	f := newChanFetcher()
	c := newTestCache(clk, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Start(ctx)

	warm := f.next(t) // warm-up without any request
	t1 := tokenAt(clk, "t1")
	warm.reply <- fetchResult{tok: t1}
	clk.waitTimerAt(t, t1.SentAt.Add(4*time.Minute)) // 80% of the 5m fresh period
	mustToken(t, c, "t1")

	clk.AdvanceTo(t1.SentAt.Add(4 * time.Minute))
	refresh := f.next(t)
	if refresh.have != t1 {
		t.Errorf("refresh got have %+v, want the current token", refresh.have)
	}
	mustToken(t, c, "t1")        // fresh, served while the refresh is out
	clk.AdvanceTo(t1.FreshUntil) // stale now, still usable
	mustToken(t, c, "t1")        // served without waiting or a second fetch
	t2 := tokenAt(clk, "t2")
	refresh.reply <- fetchResult{tok: t2}
	clk.waitTimerAt(t, t2.SentAt.Add(4*time.Minute))
	mustToken(t, c, "t2")
	if n := f.n.Load(); n != 2 {
		t.Errorf("got %d fetches, want 2", n)
	}
}

func TestCache_RefreshAheadJitter(t *testing.T) {
	tests := []struct {
		rand float64
		want time.Duration // after sending; the fresh period is 100s
	}{{0, 72 * time.Second}, {0.5, 80 * time.Second}, {0.75, 84 * time.Second},
		{0.999999, 88 * time.Second}}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.rand), func(t *testing.T) {
			clk := newFakeClock()
			sent := clk.Now()
			f := &funcFetcher{f: func(int64, Token) (Token, error) {
				tok := NewToken("t", sent, time.Hour, 100*time.Second)
				return tok, nil
			}}
			c := NewCache(CacheConfig{Fetcher: f, Clock: clk, Rand: fixedRand(tt.rand)})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c.Start(ctx)
			clk.waitTimers(t, "the refresh timer", func(ats []time.Time) bool {
				if len(ats) != 1 {
					return false
				}
				d := ats[0].Sub(sent) - tt.want
				return d > -time.Millisecond && d < time.Millisecond
			})
		})
	}
}

func TestCache_OutageServesStaleUntilUnusable(t *testing.T) {
	clk := newFakeClock()
	var down atomic.Bool
	f := &funcFetcher{f: func(n int64, _ Token) (Token, error) {
		if down.Load() {
			return Token{}, errors.New("fetch token: token service down")
		}
		return NewToken(fmt.Sprint("t", n), clk.Now(), 10*time.Minute, time.Minute), nil
	}}
	c := newTestCache(clk, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Start(ctx)
	t1Sent := clk.Now()
	clk.waitTimerAt(t, t1Sent.Add(48*time.Second)) // fresh 1m, usable 9m30s
	down.Store(true)

	// Walk through the outage one backoff at a time.
	for clk.Now().Before(t1Sent.Add(9*time.Minute + 29*time.Second)) {
		next := clk.waitTimerCount(t, 1)[0]
		clk.AdvanceTo(minTime(next, t1Sent.Add(9*time.Minute+29*time.Second)))
		mustToken(t, c, "t1")
	}
	clk.AdvanceTo(t1Sent.Add(9*time.Minute + 30*time.Second))
	for range 3 {
		tok, err := c.Token(context.Background())
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("past usability: got %q, %v; want ErrUnavailable", tok, err)
		}
	}
	if _, ok := c.Usable(); ok {
		t.Error("Usable() reports ok past usability")
	}

	down.Store(false)
	next := clk.waitTimerCount(t, 1)[0]
	clk.AdvanceTo(next)
	clk.waitTimerAt(t, next.Add(48*time.Second)) // recovered: next refresh planned
	tok, err := c.Token(context.Background())
	if err != nil || tok == "t1" {
		t.Errorf("after recovery: got %q, %v; want a new token", tok, err)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func TestCache_BackoffGrowsToCap(t *testing.T) {
	clk := newFakeClock()
	f := &funcFetcher{f: func(int64, Token) (Token, error) { return Token{}, errors.New("down") }}
	c := NewCache(CacheConfig{Fetcher: f, Clock: clk, Rand: fixedRand(1)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Start(ctx)
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60} {
		next := clk.waitTimerCount(t, 1)[0]
		if got := next.Sub(clk.Now()); got != want*time.Second {
			t.Errorf("retry %d: got backoff %s, want %s", i+1, got, want*time.Second)
		}
		clk.AdvanceTo(next)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{1, 1, time.Second}, {1, 0.5, 500 * time.Millisecond}, {2, 1, 2 * time.Second},
		{3, 0.25, time.Second}, {6, 1, 32 * time.Second}, {7, 1, 60 * time.Second},
		{7, 0.5, 30 * time.Second}, {1000, 1, 60 * time.Second},
		{1, 0, backoffFloor}, {40, 0.001, backoffFloor},
	}
	for _, tt := range tests {
		if got := backoff(tt.n, tt.r); got != tt.want {
			t.Errorf("backoff(%d, %v): got %s, want %s", tt.n, tt.r, got, tt.want)
		}
	}
}

func TestCache_InvalidateOnlyCurrentToken(t *testing.T) {
	clk := newFakeClock()
	var haves []string
	var mu sync.Mutex
	f := &funcFetcher{f: func(n int64, have Token) (Token, error) {
		mu.Lock()
		haves = append(haves, have.Value.Reveal())
		mu.Unlock()
		return tokenAt(clk, fmt.Sprint("t", n)), nil
	}}
	c := newTestCache(clk, f)
	mustToken(t, c, "t1")
	c.Invalidate("some-old-token")
	mustToken(t, c, "t1")
	c.Invalidate("t1")
	mustToken(t, c, "t2")
	c.Invalidate("t1") // a late 401 for the old token
	mustToken(t, c, "t2")
	if want := []string{"", "t1"}; fmt.Sprint(haves) != fmt.Sprint(want) {
		t.Errorf("fetches got have %q, want %q", haves, want)
	}
}

func TestCache_NeverReturnsUnusableToken(t *testing.T) {
	clk := newFakeClock()
	f := &funcFetcher{f: func(int64, Token) (Token, error) {
		return NewToken("old", clk.Now().Add(-time.Hour), time.Minute, time.Minute), nil
	}}
	c := newTestCache(clk, f)
	tok, err := c.Token(context.Background())
	if !errors.Is(err, ErrUnavailable) || tok != "" {
		t.Errorf("got %q, %v; want no token and ErrUnavailable", tok, err)
	}
}

func TestCache_Usable(t *testing.T) {
	clk := newFakeClock()
	f := &funcFetcher{f: func(int64, Token) (Token, error) { return tokenAt(clk, "t"), nil }}
	c := newTestCache(clk, f)
	if _, ok := c.Usable(); ok {
		t.Error("empty cache: Usable() ok, want not ok")
	}
	mustToken(t, c, "t")
	want := clk.Now().Add(time.Hour - 30*time.Second)
	if until, ok := c.Usable(); !ok || !until.Equal(want) {
		t.Errorf("got %v, %v; want %v, true", until, ok, want)
	}
	clk.Advance(time.Hour)
	if _, ok := c.Usable(); ok {
		t.Error("expired token: Usable() ok, want not ok")
	}
}

func TestCache_StartStopsWithContext(t *testing.T) {
	clk := newFakeClock()
	f := &funcFetcher{f: func(int64, Token) (Token, error) { return tokenAt(clk, "t"), nil }}
	c := newTestCache(clk, f)
	ctx, cancel := context.WithCancel(context.Background())
	c.Start(ctx)
	clk.waitTimerCount(t, 1)
	cancel()
	clk.waitTimerCount(t, 0) // the loop stopped its timer on the way out
}

func TestCache_LogsRefreshAndFailureWithoutSecrets(t *testing.T) {
	clk := newFakeClock()
	var logs syncBuffer
	fail := true
	f := &funcFetcher{f: func(int64, Token) (Token, error) {
		if fail {
			return Token{}, errors.New("fetch token: status 503")
		}
		tok := tokenAt(clk, "secret-token-value")
		tok.Source = SourceRedis
		return tok, nil
	}}
	c := NewCache(CacheConfig{Fetcher: f, Clock: clk, Rand: fixedRand(0),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if _, err := c.Token(context.Background()); err == nil {
		t.Fatal("got a token from a failing fetcher")
	}
	fail = false
	clk.Advance(time.Second)
	mustToken(t, c, "secret-token-value")
	out := logs.String()
	for _, want := range []string{
		`"level":"WARN","msg":"token fetch failed","component":"token_cache",` +
			`"error":"fetch token: status 503","retry_in":"100ms"`,
		`"level":"INFO","msg":"token refreshed","component":"token_cache",` +
			`"ttl":"59m30s","backend":"redis","duration_ms":0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s; got:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret-token-value") {
		t.Errorf("logs hold the token: %s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for the cache's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCache_InvalidateAtMostOncePerGap(t *testing.T) {
	clk := newFakeClock()
	f := &funcFetcher{f: func(n int64, _ Token) (Token, error) {
		return tokenAt(clk, fmt.Sprint("t", n)), nil
	}}
	c := newTestCache(clk, f)
	mustToken(t, c, "t1")
	c.Invalidate("t1")
	mustToken(t, c, "t2")
	c.Invalidate("t2") // rejected again at once: a configuration error
	mustToken(t, c, "t2")
	clk.Advance(invalidateGap)
	c.Invalidate("t2")
	mustToken(t, c, "t3")
	if got := f.n.Load(); got != 3 {
		t.Errorf("got %d fetches, want 3: one per gap from rejections", got)
	}
}
