package tokens

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// newTestShared is a Shared on url in front of a Client built from cfg.
func newTestShared(t *testing.T, url string, cfg ClientConfig, sc SharedConfig) *Shared {
	t.Helper()
	sc.URL = url
	if sc.Stats == nil {
		sc.Stats = new(Stats)
	}
	s, err := NewShared(sc, newTestClient(t, cfg))
	if err != nil {
		t.Fatalf("NewShared: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustFetch(t *testing.T, f Fetcher, have Token) Token {
	t.Helper()
	tok, err := f.Fetch(context.Background(), have)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return tok
}

func rawGet(t *testing.T, c redis.Conn, key string) []byte {
	t.Helper()
	b, err := redis.Bytes(c.Do("GET", key))
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return b
}

func TestShared_TwoReplicasMissTogetherFetchOnce(t *testing.T) {
	rs := startRedis(t)
	ts := newTokenServer(t, newTestPKI(t))
	arrived, gate := make(chan struct{}, 8), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(gate) }) }) // runs before ts.Close
	ts.setRespond(func(w http.ResponseWriter, n int) {
		arrived <- struct{}{}
		<-gate
		respondToken(3600)(w, n)
	})
	cfg := ts.clientConfig(t, "replica")
	statsA, statsB := new(Stats), new(Stats)
	a := NewCache(CacheConfig{Fetcher: newTestShared(t, rs.url(), cfg, SharedConfig{Stats: statsA})})
	b := NewCache(CacheConfig{Fetcher: newTestShared(t, rs.url(), cfg, SharedConfig{Stats: statsB})})

	results := make(chan string, 2)
	for _, c := range []*Cache{a, b} {
		go func() {
			tok, err := c.Token(context.Background())
			if err != nil {
				tok = err.Error()
			}
			results <- tok
		}()
	}
	<-arrived // one replica holds the lock and is fetching
	waitFor(t, "both replicas to miss in Redis", func() bool {
		return statsA.RedisMisses.Load()+statsB.RedisMisses.Load() == 2
	})
	once.Do(func() { close(gate) })
	for range 2 {
		if got := <-results; got != "token-1" {
			t.Errorf("got %q, want token-1", got)
		}
	}
	if n := len(ts.requests()); n != 1 {
		t.Errorf("token server saw %d requests, want 1", n)
	}
	if hits := statsA.RedisHits.Load() + statsB.RedisHits.Load(); hits != 1 {
		t.Errorf("got %d Redis hits, want 1 (the replica that waited)", hits)
	}
	if n, err := redis.Int(rs.conn().Do("EXISTS", "cerbai:lock:"+newTestClient(t,
		cfg).Identity())); err != nil || n != 0 {
		t.Errorf("lock still held after the fetch: %d, %v", n, err)
	}
}

func TestShared_StoredValueIsSealed(t *testing.T) {
	rs := startRedis(t)
	ts := newTokenServer(t, newTestPKI(t))
	clk := newFakeClock() // stands still: PX is exactly the usable time left
	cfg := ts.clientConfig(t, "c")
	cfg.Clock = clk
	s := newTestShared(t, rs.url(), cfg, SharedConfig{KeyPrefix: "test/", Clock: clk})
	mustFetch(t, s, Token{})
	key := "test/token:" + s.client.Identity()
	raw := rawGet(t, rs.conn(), key)
	if bytes.Contains(raw, []byte("token-1")) || raw[0] != sealVersion {
		t.Errorf("stored value %q holds the token or lacks the version byte", raw)
	}
	pttl, err := redis.Int64(rs.conn().Do("PTTL", key))
	const usable = 3570 * 1000 // expires_in 3600s less 30s skew
	if err != nil || pttl <= usable-60*1000 || pttl > usable {
		t.Errorf("got PTTL %d, %v; want just under %d", pttl, err, usable)
	}
}

func TestShared_ReplicaGetsFresherToken(t *testing.T) {
	rs := startRedis(t)
	ts := newTokenServer(t, newTestPKI(t))
	cfg := ts.clientConfig(t, "c")
	a := newTestShared(t, rs.url(), cfg, SharedConfig{})
	b := newTestShared(t, rs.url(), cfg, SharedConfig{})

	t1 := mustFetch(t, a, Token{})
	got := mustFetch(t, b, Token{})
	if got.Value != t1.Value || got.Source != SourceRedis || !got.SentAt.Equal(t1.SentAt) {
		t.Errorf("got %+v, want token-1 from redis sent at %v", got, t1.SentAt)
	}
	// b already has token-1: Redis has nothing fresher, so b fetches.
	if got := mustFetch(t, b, t1); got.Value.Reveal() != "token-2" {
		t.Errorf("with have=token-1: got %q, want token-2", got.Value.Reveal())
	}
	if got := mustFetch(t, a, t1); got.Value.Reveal() != "token-2" || got.Source != SourceRedis {
		t.Errorf("a got %q from %s, want token-2 from redis", got.Value.Reveal(), got.Source)
	}
	if n := len(ts.requests()); n != 2 {
		t.Errorf("token server saw %d requests, want 2", n)
	}
}

func TestShared_ValueThatDoesNotOpenIsAMiss(t *testing.T) {
	rs := startRedis(t)
	ts := newTokenServer(t, newTestPKI(t))
	cfg := ts.clientConfig(t, "c")
	a := newTestShared(t, rs.url(), cfg, SharedConfig{})
	mustFetch(t, a, Token{})

	other := cfg
	other.ClientSecret = "another-secret" // same identity, another sealing key
	statsB := new(Stats)
	b := newTestShared(t, rs.url(), other, SharedConfig{Stats: statsB})
	if got := mustFetch(t, b, Token{}); got.Value.Reveal() != "token-2" {
		t.Errorf("wrong secret: got %q, want a new token-2", got.Value.Reveal())
	}
	if statsB.RedisHits.Load() != 0 || statsB.RedisMisses.Load() != 1 {
		t.Errorf("got %d hits %d misses, want 0 and 1",
			statsB.RedisHits.Load(), statsB.RedisMisses.Load())
	}

	key := "cerbai:token:" + a.client.Identity()
	conn := rs.conn()
	raw := rawGet(t, conn, key) // sealed by b now: a cannot open it either
	raw[len(raw)-1] ^= 1
	if _, err := conn.Do("SET", key, raw); err != nil {
		t.Fatal(err)
	}
	if got := mustFetch(t, b, Token{}); got.Value.Reveal() != "token-3" {
		t.Errorf("tampered value: got %q, want a new token-3", got.Value.Reveal())
	}
}

func TestShared_TLSAuthSealsWithPrivateKey(t *testing.T) {
	rs := startRedis(t)
	p := newTestPKI(t)
	ts := newTokenServer(t, p)
	cfg := ts.clientConfig(t, "c")
	cfg.AuthMethod, cfg.ClientSecret = AuthTLS, ""
	a := newTestShared(t, rs.url(), cfg, SharedConfig{})
	mustFetch(t, a, Token{})
	same := newTestShared(t, rs.url(), cfg, SharedConfig{})
	if got := mustFetch(t, same, Token{}); got.Source != SourceRedis {
		t.Errorf("same key: got source %q, want redis", got.Source)
	}
	other := cfg
	other.CertFile, other.KeyFile = p.clientFiles(t, "c2") // same identity, another key
	if got := mustFetch(t, newTestShared(t, rs.url(), other, SharedConfig{}), Token{}); got.Source !=
		SourceTokenService {
		t.Errorf("other key: got source %q, want token_service", got.Source)
	}
}

func TestShared_LockLoserFetchesItselfAfterWait(t *testing.T) {
	rs := startRedis(t)
	ts := newTokenServer(t, newTestPKI(t))
	clk := newFakeClock()
	cfg := ts.clientConfig(t, "c")
	cfg.Clock = clk
	s := newTestShared(t, rs.url(), cfg, SharedConfig{Clock: clk, Wait: time.Second})
	conn := rs.conn()
	lockKey := "cerbai:lock:" + s.client.Identity()
	if _, err := conn.Do("SET", lockKey, "another-replica", "PX", 60000); err != nil {
		t.Fatal(err)
	}
	done := make(chan Token, 1)
	go func() { done <- mustFetch(t, s, Token{}) }()
	clk.waitTimerCount(t, 1) // polling for the holder's token
	if n := len(ts.requests()); n != 0 {
		t.Fatalf("fetched %d times while the lock was held, want 0", n)
	}
	clk.Advance(time.Second)
	if got := <-done; got.Value.Reveal() != "token-1" {
		t.Errorf("got %q, want token-1", got.Value.Reveal())
	}
	if owner, err := redis.String(conn.Do("GET", lockKey)); owner != "another-replica" {
		t.Errorf("lock owner now %q, %v; want another-replica's lock left alone", owner, err)
	}
}

func TestShared_UnlockOnlyOwnLock(t *testing.T) {
	rs := startRedis(t)
	ts := newTokenServer(t, newTestPKI(t))
	s := newTestShared(t, rs.url(), ts.clientConfig(t, "c"), SharedConfig{})
	conn := rs.conn()
	if _, err := conn.Do("SET", s.lockKey, "other"); err != nil {
		t.Fatal(err)
	}
	s.unlock(context.Background(), "mine")
	if got, _ := redis.String(conn.Do("GET", s.lockKey)); got != "other" {
		t.Errorf("after unlock by a non-owner: got %q, want other", got)
	}
	s.unlock(context.Background(), "other")
	if n, _ := redis.Int(conn.Do("EXISTS", s.lockKey)); n != 0 {
		t.Error("owner's unlock left the lock in place")
	}
}

func TestShared_RedisDownFallsBackAndComesBack(t *testing.T) {
	rs := startRedis(t)
	ts := newTokenServer(t, newTestPKI(t))
	cfg := ts.clientConfig(t, "c")
	var logs syncBuffer
	stats := new(Stats)
	s := newTestShared(t, rs.url(), cfg, SharedConfig{Stats: stats,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	have := mustFetch(t, s, Token{})
	if !stats.RedisUp.Load() {
		t.Fatal("RedisUp false with Redis running")
	}

	rs.stop()
	for range 3 {
		have = mustFetch(t, s, have) // Redis down: straight to the token service
	}
	if stats.RedisUp.Load() {
		t.Error("RedisUp true with Redis stopped")
	}
	if n := strings.Count(logs.String(), "redis unavailable"); n != 1 {
		t.Errorf("got %d warnings, want 1 (rate-limited); logs:\n%s", n, logs.String())
	}

	rs.start() // same port, empty
	have = mustFetch(t, s, have)
	if !stats.RedisUp.Load() || !strings.Contains(logs.String(), "reachable again") {
		t.Errorf("RedisUp %v after restart; logs:\n%s", stats.RedisUp.Load(), logs.String())
	}
	rawGet(t, rs.conn(), s.tokenKey) // the new token is shared again
	other := newTestShared(t, rs.url(), cfg, SharedConfig{})
	if got := mustFetch(t, other, Token{}); got.Value != have.Value {
		t.Errorf("other replica got %q, want the shared %q", got.Value.Reveal(),
			have.Value.Reveal())
	}
	if n := len(ts.requests()); n != 5 {
		t.Errorf("token server saw %d requests, want 5", n)
	}
	if strings.Contains(logs.String(), "token-") || strings.Contains(logs.String(), "client-secret") {
		t.Errorf("logs hold a token or secret:\n%s", logs.String())
	}
}

func TestNewShared_RedisUnreachableAtStartIsAWarning(t *testing.T) {
	ts := newTokenServer(t, newTestPKI(t))
	var logs syncBuffer
	stats := new(Stats)
	url := "redis://:hunter2@127.0.0.1:" + itoa(freePort(t)) + "/0"
	s := newTestShared(t, url, ts.clientConfig(t, "c"), SharedConfig{Stats: stats,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if stats.RedisUp.Load() {
		t.Error("RedisUp true with nothing listening")
	}
	if got := mustFetch(t, s, Token{}); got.Value.Reveal() != "token-1" {
		t.Errorf("got %q, want token-1 from the token service", got.Value.Reveal())
	}
	out := logs.String()
	if !strings.Contains(out, `"level":"WARN","msg":"redis unavailable`) ||
		strings.Contains(out, "hunter2") {
		t.Errorf("want one warning and no password; logs:\n%s", out)
	}
}

func TestShared_URLCredentialsAndDatabase(t *testing.T) {
	rs := startRedis(t, "--requirepass", "pw0rd")
	ts := newTokenServer(t, newTestPKI(t))
	cfg := ts.clientConfig(t, "c")
	stats := new(Stats)
	url := "redis://:pw0rd@" + rs.addr() + "/3"
	s := newTestShared(t, url, cfg, SharedConfig{Stats: stats})
	mustFetch(t, s, Token{})
	if !stats.RedisUp.Load() {
		t.Fatal("RedisUp false with the right password")
	}
	conn := rs.conn(redis.DialPassword("pw0rd"), redis.DialDatabase(3))
	rawGet(t, conn, s.tokenKey)

	wrong := new(Stats)
	bad := newTestShared(t, "redis://:nope@"+rs.addr()+"/3", cfg, SharedConfig{Stats: wrong})
	if got := mustFetch(t, bad, Token{}); wrong.RedisUp.Load() || got.Source != SourceTokenService {
		t.Errorf("wrong password: RedisUp %v, source %q; want false, token_service",
			wrong.RedisUp.Load(), got.Source)
	}
}

func TestShared_RedissWithCAFile(t *testing.T) {
	p := newTestPKI(t)
	rs := startRedis(t)
	url := "rediss://" + tlsFront(t, p, rs.addr())
	ts := newTokenServer(t, p)
	cfg := ts.clientConfig(t, "c")
	stats := new(Stats)
	s := newTestShared(t, url, cfg, SharedConfig{CAFile: p.caFile, Stats: stats})
	mustFetch(t, s, Token{})
	if !stats.RedisUp.Load() {
		t.Fatal("RedisUp false over TLS with the CA file")
	}
	rawGet(t, rs.conn(), s.tokenKey)

	untrusted := new(Stats)
	newTestShared(t, url, cfg, SharedConfig{Stats: untrusted})
	if untrusted.RedisUp.Load() {
		t.Error("RedisUp true without the CA that signed the server certificate")
	}
}

func TestNewShared_RejectsBadConfig(t *testing.T) {
	p := newTestPKI(t)
	c := newTestClient(t, ClientConfig{Endpoint: "https://127.0.0.1:1/t", ClientSecret: "s"})
	tests := []struct{ url, ca, want string }{
		{"http://127.0.0.1:6379", "", "--redis-url (CERBAI_REDIS_URL) must look like"},
		{"redis:secret@127.0.0.1", "", "--redis-url (CERBAI_REDIS_URL)"},
		{"redis://:secret@127.0.0.1:6379/db1", "", "--redis-url (CERBAI_REDIS_URL)"},
		{"redis://", "", "--redis-url (CERBAI_REDIS_URL)"},
		{"rediss://127.0.0.1:6379", p.dir + "/missing.pem", "read --redis-ca-file"},
		{"rediss://127.0.0.1:6379", p.write(t, "junk.pem", []byte("junk")),
			"--redis-ca-file (CERBAI_REDIS_CA_FILE): no PEM certificate"},
	}
	for _, tt := range tests {
		_, err := NewShared(SharedConfig{URL: tt.url, CAFile: tt.ca}, c)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.url, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error %q shows the password", tt.url, err)
		}
	}
}

func TestRateLimited(t *testing.T) {
	var r rateLimited
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at         time.Duration
		ok         bool
		suppressed int
	}{{0, true, 0}, {time.Second, false, 0}, {29 * time.Second, false, 0},
		{30 * time.Second, true, 2}, {31 * time.Second, false, 0}, {time.Hour, true, 1}}
	for _, s := range steps {
		n, ok := r.allow(t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Errorf("at +%s: got %d, %v; want %d, %v", s.at, n, ok, s.suppressed, s.ok)
		}
	}
}
