package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cerbai/cerbai/integration/fake"
)

// The secrets of the full run. Each starts with six characters that no
// ordinary log text holds (mixed case, not hex), so that any prefix of
// six or more found in a log line is a leak.
const (
	secretClient    = "CsQz7Vw3Kx9-client-secret"
	secretKeyFlag   = "PkFl4gRw2Zt-proxy-flag"
	secretKeyFile   = "PkFi9eXc8Vq-proxy-file"
	secretRedisPass = "RdPw5sWz9Kq-redis-pass"
	tokenPrefix     = "AtIs3uEdTk-" // issued tokens are tokenPrefix + n + "-access"
	secretClientID  = "cerbai-test"
)

// secretTokenEndpoint is an mTLS token endpoint that issues distinctive
// tokens and, while down, answers an OAuth error that echoes the client
// secret back (as a careless server might).
type secretTokenEndpoint struct {
	url    string
	down   atomic.Bool
	mu     sync.Mutex // guards issued
	issued []string
}

func newSecretTokenEndpoint(t *testing.T, pki *fake.PKI) *secretTokenEndpoint {
	t.Helper()
	e := &secretTokenEndpoint{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	tc, err := pki.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = tc
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e.url = srv.URL + "/oauth2/token"
	return e
}

func (e *secretTokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	if e.down.Load() {
		w.WriteHeader(http.StatusUnauthorized)
		b, _ := json.Marshal(map[string]string{"error": "invalid_client",
			"error_description": "client secret " + secretClient + " is not valid"})
		_, _ = w.Write(b)
		return
	}
	e.mu.Lock()
	tok := fmt.Sprintf("%s%d-access", tokenPrefix, len(e.issued)+1)
	e.issued = append(e.issued, tok)
	e.mu.Unlock()
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, tok)
}

func (e *secretTokenEndpoint) tokens() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.issued...)
}

// leak is one secret to look for in the logs: the value, and every prefix
// of it at least minPrefix long.
type leak struct {
	name, value string
	minPrefix   int
}

// TestSecrets_NoSecretInAnyLogLine runs cerbai at debug level with every
// kind of secret set, drives it through successes and failures, and
// searches every log line (raw and JSON-decoded) for each secret and any
// prefix of one.
func TestSecrets_NoSecretInAnyLogLine(t *testing.T) {
	pki := testPKI(t)
	tokenEP := newSecretTokenEndpoint(t, pki)
	llm, err := fake.NewLLM(fake.LLMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(llm.Close)
	keyFile := filepath.Join(t.TempDir(), "proxy-keys")
	if err := os.WriteFile(keyFile, []byte("bob="+secretKeyFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	redisURL := "redis://cerbai:" + secretRedisPass + "@" + closedAddr(t) + "/0"

	environ := baseEnv(pki, tokenEP.url, llm.URL)
	delete(environ, "CERBAI_CLIENT_SECRET")
	environ["CERBAI_REDIS_URL"] = redisURL
	run := startProxy(t, []string{"--listen-addr", "127.0.0.1:0", "--log-level", "debug",
		"--client-secret", secretClient, "--proxy-token", "alice=" + secretKeyFlag,
		"--proxy-token-file", keyFile, "--token-wait", "2s", "--access-log"}, environ)
	driveWithFailures(t, run, tokenEP, llm)
	run.stop(t)

	checkConfigLine(t, run, redisURL)
	if s := run.stderr.String(); s != "" {
		t.Errorf("stderr is not empty:\n%s", s)
	}
	logs := renderLogs(t, run)
	leaks := []leak{
		{"client secret", secretClient, 6},
		{"proxy key from the flag", secretKeyFlag, 6},
		{"proxy key from the file", secretKeyFile, 6},
		{"redis password", secretRedisPass, 6},
		// The Basic credential on the wire; its first 16 characters only
		// encode the client id, which is no secret.
		{"basic credential", base64.StdEncoding.EncodeToString(
			[]byte(secretClientID + ":" + secretClient)), 24},
		// The client private key: PKCS #8 for P-256 has 36 bytes of fixed
		// structure (48 base64 characters) before the private scalar.
		// Random base64 could match by chance in short runs, hence 12.
		{"client private key", privateKeyBody(t, pki)[48:], 12},
	}
	issued := tokenEP.tokens()
	if len(issued) < 2 {
		t.Fatalf("the token endpoint issued %d tokens, want at least 2 (the replay)",
			len(issued))
	}
	for i, tok := range issued {
		leaks = append(leaks, leak{fmt.Sprintf("access token %d", i+1), tok, 6})
	}
	for _, l := range leaks {
		if at := findLeak(logs, l); at != "" {
			t.Errorf("the logs hold the %s (%s):\n%s", l.name, at, logs)
		}
	}
}

// driveWithFailures makes every kind of request the secrets could leak
// through: good ones with each key, wrong keys, bad requests, an upstream
// 401 with the token endpoint down (echoing the secret), and recovery.
func driveWithFailures(t *testing.T, run *proxyRun, tokenEP *secretTokenEndpoint,
	llm *fake.LLM) {
	t.Helper()
	base := "http://" + run.addr
	run.stdout.waitFor(t, "the first token", func(s string) bool {
		return strings.Contains(s, `"msg":"token refreshed"`)
	})
	send := func(raw string, want int) {
		t.Helper()
		a := rawSend(t, dialFrom(t, run.addr, ""), raw, strings.Fields(raw)[0])
		if a.resp == nil || a.resp.StatusCode != want {
			t.Fatalf("%q: got %v (%v), want %d", raw, a.resp, a.err, want)
		}
	}
	chat := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	for _, hdr := range []string{
		"Authorization: Bearer " + secretKeyFlag + "\r\n",
		"api-key: " + secretKeyFile + "\r\n",
		"X-Api-Key: " + secretKeyFlag + "\r\n",
	} {
		send(post("/v1/chat/completions", chat, hdr), 200)
	}
	// Wrong keys, some sharing a long prefix with a real one, and keys in
	// places cerbai does not read them.
	for _, hdr := range []string{
		"Authorization: Bearer " + secretKeyFlag[:len(secretKeyFlag)-1] + "\r\n",
		"api-key: " + secretKeyFile + "x\r\n",
		"X-Api-Key: " + secretKeyFlag[:8] + "\r\n",
		"Authorization: Basic " + secretKeyFlag + "\r\n",
		"Proxy-Authorization: Bearer " + secretKeyFlag + "\r\n",
	} {
		send(get("/v1/models", hdr), 401)
	}
	send(get("/v1/models?api_key="+secretKeyFile), 401)
	send(get("/v1/models?api_key="+secretKeyFile, "api-key: "+secretKeyFile+"\r\n"), 200)

	// Bad requests with a valid key.
	key := "Authorization: Bearer " + secretKeyFlag + "\r\n"
	send(get("/v1/%2e%2e/"+secretKeyFile, key), 400)
	send("BREW /v1/models HTTP/1.1\r\nHost: x\r\n"+key+"\r\n", 405)

	// The upstream rejects the token while the token endpoint is down: the
	// replay finds no token (503) and the endpoint's error echoes the
	// secret. Then the endpoint recovers and a request is served again.
	tokenEP.down.Store(true)
	llm.RejectNext(1)
	send(post("/v1/chat/completions", chat, key), 503)
	tokenEP.down.Store(false)
	run.stdout.waitFor(t, "a token after the outage", func(s string) bool {
		return strings.Count(s, `"msg":"token refreshed"`) >= 2
	})
	status, body := getStatus(t, &http.Client{Timeout: guardTimeout}, "GET",
		base+"/v1/models", secretKeyFile)
	if status != 200 {
		t.Fatalf("after the outage: got %d %q, want 200", status, body)
	}
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	addr, err := fake.UnusedAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// privateKeyBody is the base64 body of the client key file, on one line.
func privateKeyBody(t *testing.T, pki *fake.PKI) string {
	t.Helper()
	b, err := os.ReadFile(pki.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "-----") {
			body.WriteString(strings.TrimSpace(line))
		}
	}
	return body.String()
}

// renderLogs is every log line as written, then every line's values
// decoded from JSON (so an escaped character cannot hide a match).
func renderLogs(t *testing.T, run *proxyRun) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(run.stdout.String())
	b.WriteString(run.stderr.String())
	for _, r := range run.stdout.records(t) {
		fmt.Fprintf(&b, "%v\n", r)
	}
	return b.String()
}

// findLeak returns which form of the secret occurs in logs, or "".
func findLeak(logs string, l leak) string {
	for n := len(l.value); n >= l.minPrefix; n-- {
		if strings.Contains(logs, l.value[:n]) {
			if n == len(l.value) {
				return "the whole value"
			}
			return fmt.Sprintf("a prefix of %d characters: %q", n, l.value[:n])
		}
	}
	return ""
}

// checkConfigLine checks that "config loaded" shows the Redis URL with its
// password as xxxxx.
func checkConfigLine(t *testing.T, run *proxyRun, redisURL string) {
	t.Helper()
	want := strings.Replace(redisURL, secretRedisPass, "xxxxx", 1)
	for _, r := range run.stdout.records(t) {
		if r["msg"] == "config loaded" {
			if got := r["redis_url"]; got != want {
				t.Errorf("config loaded: got redis_url %v, want %q", got, want)
			}
			return
		}
	}
	t.Error("no config loaded line")
}

// TestSecrets_WorldReadableSecretFileWarns: a secret file every user can
// read gets a start-up warning naming it; a group-readable one (normal
// for Kubernetes secret volumes) does not.
func TestSecrets_WorldReadableSecretFileWarns(t *testing.T) {
	pki := testPKI(t)
	ts := newTokenServer(t, pki)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "client-secret")
	keyFile := filepath.Join(dir, "proxy-keys")
	for _, f := range []struct {
		path, content string
		mode          os.FileMode
	}{{secretFile, secretClient, 0o644}, {keyFile, secretKeyFile, 0o640}} {
		if err := os.WriteFile(f.path, []byte(f.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil { // not subject to the umask
			t.Fatal(err)
		}
	}
	environ := baseEnv(pki, ts.URL, "http://127.0.0.1:1")
	delete(environ, "CERBAI_CLIENT_SECRET")
	run := startProxy(t, []string{"--listen-addr", "127.0.0.1:0",
		"--client-secret-file", secretFile, "--proxy-token-file", keyFile}, environ)
	run.stop(t)

	var warned []string
	for _, r := range run.stdout.records(t) {
		if msg := fmt.Sprint(r["msg"]); r["level"] == "WARN" &&
			strings.Contains(msg, "readable") {
			warned = append(warned, msg)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], secretFile) {
		t.Errorf("got warnings %q, want one naming %s", warned, secretFile)
	}
}

// TestSecrets_FailedKeyAttemptsAreRateLimited floods cerbai with wrong
// keys: at most a handful of "auth failed" lines per second, each with the
// remote address and nothing of the key, and a later line counts what was
// suppressed.
func TestSecrets_FailedKeyAttemptsAreRateLimited(t *testing.T) {
	pki := testPKI(t)
	ts := newTokenServer(t, pki)
	run := startProxy(t, []string{"--listen-addr", "127.0.0.1:0",
		"--proxy-token", secretKeyFlag}, baseEnv(pki, ts.URL, "http://127.0.0.1:1"))
	client := &http.Client{Timeout: guardTimeout}
	t.Cleanup(client.CloseIdleConnections)
	url := "http://" + run.addr + "/v1/models"
	bad := func() {
		t.Helper()
		if status, _ := getStatus(t, client, "GET", url, secretKeyFlag+"-wrong"); status != 401 {
			t.Fatalf("got %d for a wrong key, want 401", status)
		}
	}

	start := time.Now()
	const flood = 200
	for range flood {
		bad()
	}
	// The limiter allows 5 lines per one-second period; a flood that
	// spans k period boundaries may write 5 in each of k+1 periods.
	periods := int(time.Since(start)/time.Second) + 2
	if got := run.stdout.count(t, "auth failed"); got > 5*periods {
		t.Errorf("%d failed attempts over %d periods wrote %d lines, want at most %d",
			flood, periods, got, 5*periods)
	}

	// The suppressed count arrives with the first line of a later period.
	// Waiting for it takes up to a second of wall time: each poll is one
	// more wrong key, and the deadline only turns a hang into a failure.
	sent := flood
	deadline := time.Now().Add(guardTimeout)
	for !strings.Contains(run.stdout.String(), `"suppressed"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no suppressed count within %v:\n%s", guardTimeout, run.stdout)
		}
		bad()
		sent++
	}
	checkAuthFailedLines(t, run, sent)
}

// checkAuthFailedLines checks every "auth failed" line: warn level, only
// the remote address and whether a key was presented (and a suppressed
// count), and lines plus suppressed no more than the attempts.
func checkAuthFailedLines(t *testing.T, run *proxyRun, sent int) {
	t.Helper()
	lines, suppressed := 0, 0
	allowed := map[string]bool{"time": true, "level": true, "msg": true,
		"remote_addr": true, "key_presented": true, "suppressed": true}
	for _, r := range run.stdout.records(t) {
		if r["msg"] != "auth failed" {
			continue
		}
		lines++
		if r["level"] != "WARN" {
			t.Errorf("auth failed at level %v, want WARN", r["level"])
		}
		for k := range r {
			if !allowed[k] {
				t.Errorf("auth failed has attribute %q, want only the remote address", k)
			}
		}
		if n, ok := r["suppressed"].(float64); ok {
			if n <= 0 {
				t.Errorf("got suppressed %v, want a positive count", n)
			}
			suppressed += int(n)
		}
	}
	if suppressed == 0 || lines+suppressed > sent {
		t.Errorf("got %d lines and %d suppressed for %d attempts, want some suppressed "+
			"and no more than the attempts", lines, suppressed, sent)
	}
	if strings.Contains(run.stdout.String(), secretKeyFlag[:6]) {
		t.Error("the log holds part of the presented key")
	}
}

// TestSecrets_TokenErrorEchoingTheCredentialIsMasked: a token service
// whose error description echoes the request's Authorization header (a
// debugging server might) must not put the Basic credential, which is the
// client secret in base64, into the log.
func TestSecrets_TokenErrorEchoingTheCredentialIsMasked(t *testing.T) {
	pki := testPKI(t)
	echo := newHostileTokenEndpoint(t, pki, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		b, _ := json.Marshal(map[string]string{"error": "invalid_client",
			"error_description": "rejected " + r.Header.Get("Authorization")})
		_, _ = w.Write(b)
	})
	environ := baseEnv(pki, echo.url, "http://127.0.0.1:1")
	environ["CERBAI_CLIENT_SECRET"] = secretClient
	run := startProxy(t, []string{"--listen-addr", "127.0.0.1:0"}, environ)
	run.stdout.waitFor(t, "the failed warm-up", func(s string) bool {
		return strings.Contains(s, `"msg":"token fetch failed"`)
	})
	run.stop(t)
	credential := base64.StdEncoding.EncodeToString([]byte(secretClientID + ":" + secretClient))
	if at := findLeak(renderLogs(t, run), leak{"basic credential", credential, 24}); at != "" {
		t.Errorf("the logs hold the Basic credential (%s):\n%s", at, run.stdout)
	}
}
