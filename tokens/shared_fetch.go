package tokens

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// releaseLock deletes the lock only if this replica still owns it: after
// its TTL the lock may belong to another replica.
var releaseLock = redis.NewScript(1, `
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// Fetch returns a token from Redis if it holds one fresher than have;
// otherwise one replica wins the lock and fetches from the token service
// while the others wait for its token, at most the configured Wait,
// before fetching themselves. Any Redis error means a direct fetch: Redis
// never fails a fetch the client alone would have done.
func (s *Shared) Fetch(ctx context.Context, have Token) (Token, error) {
	deadline := s.clock.Now().Add(s.wait)
	owner := randomOwner()
	for i := 0; ; i++ {
		tok, ok, err := s.lookup(ctx, have)
		if err != nil {
			return s.direct(ctx, have, err)
		}
		if ok {
			s.stats.RedisHits.Add(1)
			return tok, nil
		}
		if i == 0 {
			s.stats.RedisMisses.Add(1) // later polls are the same lookup waiting
		}
		won, err := s.lock(ctx, owner)
		if err != nil {
			return s.direct(ctx, have, err)
		}
		if won {
			return s.fetchAndStore(ctx, have, owner)
		}
		// Another replica is fetching: look again shortly.
		if !s.clock.Now().Before(deadline) {
			s.log.Debug("no token from the lock holder in time; fetching directly")
			tok, err := s.client.Fetch(ctx, have)
			if err == nil {
				s.store(ctx, tok)
			}
			return tok, err
		}
		if err := s.pause(ctx, lockPoll); err != nil {
			return Token{}, fmt.Errorf("wait for shared token: %w", err)
		}
	}
}

// lookup reads and opens the shared token; ok when it is fresh and
// fresher than have. A value that does not open is a miss.
func (s *Shared) lookup(ctx context.Context, have Token) (Token, bool, error) {
	raw, err := redis.Bytes(s.do(ctx, "GET", s.tokenKey))
	if errors.Is(err, redis.ErrNil) {
		return Token{}, false, nil
	}
	if err != nil {
		return Token{}, false, err
	}
	tok, err := s.open(raw)
	if err != nil {
		s.log.Debug("shared token does not open; treating it as a miss", "error", err.Error())
		return Token{}, false, nil
	}
	ok := tok.Fresh(s.clock.Now()) && tok.FreshUntil.After(have.FreshUntil)
	return tok, ok, nil
}

func (s *Shared) lock(ctx context.Context, owner string) (bool, error) {
	_, err := redis.String(s.do(ctx, "SET", s.lockKey, owner, "NX", "PX",
		s.lockTTL.Milliseconds()))
	if errors.Is(err, redis.ErrNil) {
		return false, nil // held by another replica
	}
	return err == nil, err
}

// fetchAndStore is the lock winner's part: fetch, share, release.
func (s *Shared) fetchAndStore(ctx context.Context, have Token, owner string) (Token, error) {
	defer s.unlock(ctx, owner)
	// Second look: the previous holder may have stored a token and let go
	// of the lock between our GET and our SET.
	tok, ok, err := s.lookup(ctx, have)
	if ok {
		s.stats.RedisHits.Add(1)
		return tok, nil
	}
	if err != nil {
		s.redisFailed(err)
	}
	tok, err = s.client.Fetch(ctx, have)
	if err == nil {
		s.store(ctx, tok)
	}
	return tok, err
}

func (s *Shared) unlock(ctx context.Context, owner string) {
	if _, err := s.doScript(ctx, releaseLock, s.lockKey, owner); err != nil {
		s.redisFailed(err)
	}
}

// store shares tok until it stops being usable.
func (s *Shared) store(ctx context.Context, tok Token) {
	ttl := tok.UsableUntil.Sub(s.clock.Now()).Milliseconds()
	if ttl <= 0 {
		return
	}
	sealed, err := s.seal(tok)
	if err != nil {
		s.log.Warn("seal token for the shared cache", "error", err.Error())
		return
	}
	if _, err := s.do(ctx, "SET", s.tokenKey, sealed, "PX", ttl); err != nil {
		s.redisFailed(err)
	}
}

func (s *Shared) direct(ctx context.Context, have Token, err error) (Token, error) {
	s.redisFailed(err)
	return s.client.Fetch(ctx, have)
}

// do runs one command on a pooled connection and tracks Redis health.
func (s *Shared) do(ctx context.Context, cmd string, args ...any) (any, error) {
	conn, err := s.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	reply, err := redis.DoContext(conn, ctx, cmd, args...)
	s.noteReply(err)
	return reply, err
}

func (s *Shared) doScript(ctx context.Context, sc *redis.Script, args ...any) (any, error) {
	conn, err := s.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	reply, err := sc.DoContext(ctx, conn, args...)
	s.noteReply(err)
	return reply, err
}

// noteReply marks Redis up after an answer; an error reply such as a
// missing key is still an answer.
func (s *Shared) noteReply(err error) {
	var rerr redis.Error
	if err == nil || errors.Is(err, redis.ErrNil) || errors.As(err, &rerr) {
		if !s.stats.RedisUp.Swap(true) {
			s.log.Info("redis is reachable again; using the shared cache")
		}
	}
}

func (s *Shared) redisFailed(err error) {
	s.stats.RedisUp.Store(false)
	if n, ok := s.warn.allow(s.clock.Now()); ok {
		s.log.Warn("redis unavailable; fetching tokens without the shared cache",
			"error", err.Error(), "suppressed", n)
	}
}

func (s *Shared) pause(ctx context.Context, d time.Duration) error {
	t := s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomOwner() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// rateLimited lets one event through per redisWarnEvery and counts the
// ones it held back.
type rateLimited struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *rateLimited) allow(now time.Time) (suppressed int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && now.Sub(r.last) < redisWarnEvery {
		r.suppressed++
		return 0, false
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	return n, true
}
