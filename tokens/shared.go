package tokens

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"time"

	"github.com/gomodule/redigo/redis"
)

const (
	defaultKeyPrefix = "cerbai:"
	redisTimeout     = time.Second // connect, read and write, each
	// lockPoll is how often a replica that lost the lock looks for the
	// winner's token.
	lockPoll = 50 * time.Millisecond
	// redisWarnEvery bounds how often an unreachable Redis is reported.
	redisWarnEvery = 30 * time.Second
)

// SharedConfig configures a Shared. Zero values mean the stated defaults.
type SharedConfig struct {
	URL       string        // --redis-url: redis:// or rediss://, user/password/db from the URL
	CAFile    string        // --redis-ca-file for rediss, added to the system roots
	KeyPrefix string        // --redis-key-prefix; "" → "cerbai:"
	Wait      time.Duration // how long a lock loser waits for the winner's token; 0 → 10s
	Logger    *slog.Logger  // nil → discard
	Clock     Clock         // nil → real time
	Stats     *Stats        // RedisHits, RedisMisses, RedisUp; nil → a private one
}

// Shared is a Fetcher that shares tokens between replicas through Redis,
// so that a fleet asks the token service once per token, not once per
// replica. It sits behind each replica's Cache and in front of the Client;
// whenever Redis fails, it fetches from the Client directly.
type Shared struct {
	client            *Client
	pool              *redis.Pool
	tokenKey, lockKey string
	lockTTL           time.Duration
	wait              time.Duration
	clock             Clock
	log               *slog.Logger
	stats             *Stats
	warn              rateLimited
}

var redisDBPath = regexp.MustCompile(`^/?[0-9]*$`)

// NewShared wraps client. Redis unreachable at start is a warning, not an
// error: errors are only for a malformed URL or an unreadable CA file.
func NewShared(cfg SharedConfig, client *Client) (*Shared, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Opaque != "" ||
		u.Host == "" || !redisDBPath.MatchString(u.Path) {
		// The URL is not quoted: it may hold a password.
		return nil, errors.New("shared cache: --redis-url (CERBAI_REDIS_URL) must look like " +
			"redis[s]://[user:password@]host:port[/db]")
	}
	s := &Shared{
		client:   client,
		tokenKey: cmp.Or(cfg.KeyPrefix, defaultKeyPrefix) + "token:" + client.Identity(),
		lockKey:  cmp.Or(cfg.KeyPrefix, defaultKeyPrefix) + "lock:" + client.Identity(),
		// The lock outlives the winner's fetch, so a crashed winner holds
		// it only briefly.
		lockTTL: client.cfg.Timeout + 2*time.Second,
		wait:    cmpOr(cfg.Wait, defaultWait),
		clock:   clockOrReal(cfg.Clock),
		log:     loggerOrDiscard(cfg.Logger).With("component", "shared_cache"),
		stats:   cfg.Stats,
	}
	if s.stats == nil {
		s.stats = new(Stats)
	}
	opts := []redis.DialOption{redis.DialConnectTimeout(redisTimeout),
		redis.DialReadTimeout(redisTimeout), redis.DialWriteTimeout(redisTimeout),
		redis.DialTLSHandshakeTimeout(redisTimeout)}
	if u.Scheme == "rediss" {
		tc, err := redisTLS(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, redis.DialTLSConfig(tc))
	} else if cfg.CAFile != "" {
		s.log.Warn("--redis-ca-file is ignored with a redis:// URL; use rediss:// for TLS")
	}
	s.pool = newPool(cfg.URL, opts)
	if len(client.sealMaterial()) == 0 {
		s.log.Warn("the client secret is empty: tokens in Redis are sealed with a key " +
			"anyone can derive")
	}
	s.ping(u.Redacted())
	return s, nil
}

func redisTLS(caFile string) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("shared cache: read --redis-ca-file (CERBAI_REDIS_CA_FILE): %w",
				err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, errors.New("shared cache: --redis-ca-file (CERBAI_REDIS_CA_FILE): " +
				"no PEM certificate found")
		}
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}, nil
}

// newPool sizes the pool for the Cache in front: it fetches once at a
// time, so a replica uses one connection and keeps at most two idle.
func newPool(rawURL string, opts []redis.DialOption) *redis.Pool {
	return &redis.Pool{
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialURLContext(ctx, rawURL, opts...)
		},
		TestOnBorrow: func(c redis.Conn, lastUsed time.Time) error {
			if time.Since(lastUsed) < 10*time.Second {
				return nil
			}
			_, err := c.Do("PING")
			return err
		},
		MaxIdle:     2,
		MaxActive:   16,
		IdleTimeout: 4 * time.Minute,
	}
}

func (s *Shared) ping(where string) {
	conn, err := s.pool.GetContext(context.Background())
	if err == nil {
		_, err = conn.Do("PING")
		conn.Close()
	}
	if err != nil {
		s.redisFailed(err)
		return
	}
	s.stats.RedisUp.Store(true)
	s.log.Info("shared cache ready", "redis", where)
}

// Close closes the connection pool.
func (s *Shared) Close() error { return s.pool.Close() }
