package integration

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cerbai/cerbai/integration/fake"
)

func TestProxy_ChatCompletionEndToEnd(t *testing.T) {
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{})
	// Part of the configuration through CERBAI_* variables, as an operator
	// would (a flag beats its variable: the log level); the base path of
	// the LLM URL must be kept.
	env := []string{"CERBAI_LLM_URL=" + f.llm.URL + "/openai", "CERBAI_CLIENT_ID=" + clientID,
		"CERBAI_TOKEN_SCOPE=llm.read llm.write", "CERBAI_LOG_LEVEL=error"}
	p := startCerbai(t, env,
		"--token-endpoint", f.ts.URL,
		"--client-secret-file", f.secretFile,
		"--tls-cert-file", f.pki.ClientCertFile,
		"--tls-key-file", f.pki.ClientKeyFile,
		"--tls-ca-file", f.pki.CAFile,
		"--proxy-token", "ci="+proxyKey,
		"--log-level", "debug",
		"--access-log")

	// The client speaks plain OpenAI HTTP with the proxy key, in each of
	// the accepted headers.
	for _, hdr := range [][]string{
		{"Authorization", "Bearer " + proxyKey},
		{"Authorization", "", "X-Api-Key", proxyKey},
		{"Authorization", "", "Api-Key", proxyKey},
	} {
		status, text := completionText(t, chat(t, context.Background(),
			p.base, chatBody(false, "hello through cerbai"), hdr...))
		if status != 200 || text != "hello through cerbai" {
			t.Errorf("with %v: got %d %q, want 200 with the LLM's echo", hdr, status, text)
		}
	}

	// What the LLM saw: the token, the base path, no proxy key anywhere.
	reqs := f.llm.Requests()
	if len(reqs) != 3 {
		t.Fatalf("got %d LLM requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if got := r.Header.Get("Authorization"); got != bearer("tok-1") {
			t.Errorf("request %d: got Authorization %q, want %q", i, got, bearer("tok-1"))
		}
		if r.RequestURI != "/openai/v1/chat/completions" {
			t.Errorf("request %d: got URI %q, want /openai/v1/chat/completions", i, r.RequestURI)
		}
		for name, vals := range r.Header {
			if strings.Contains(strings.Join(vals, " "), proxyKey) {
				t.Errorf("request %d: header %s carries the proxy key", i, name)
			}
		}
		if r.Header.Get("X-Request-Id") == "" {
			t.Errorf("request %d: no X-Request-Id", i)
		}
	}

	// What the token server saw: one request, our certificate, the form.
	treqs := f.ts.Requests()
	if len(treqs) != 1 {
		t.Fatalf("got %d token requests, want 1", len(treqs))
	}
	tr := treqs[0]
	if tr.ClientCN != fake.ClientCN {
		t.Errorf("got client certificate CN %q, want %q", tr.ClientCN, fake.ClientCN)
	}
	wantForm := url.Values{"grant_type": {"client_credentials"}, "scope": {"llm.read llm.write"}}
	if tr.Form.Encode() != wantForm.Encode() {
		t.Errorf("got token form %q, want %q", tr.Form.Encode(), wantForm.Encode())
	}
	basic := base64.StdEncoding.EncodeToString(
		[]byte(url.QueryEscape(clientID) + ":" + url.QueryEscape(clientSecret)))
	if tr.Authorization != "Basic "+basic {
		t.Errorf("got token Authorization %q, want Basic %s (RFC 6749 2.3.1)",
			tr.Authorization, basic)
	}

	// Nothing secret in the logs, even at debug with the access log on.
	out := p.output()
	for _, secret := range []string{proxyKey, "tok-1", clientSecret, "s3cr"} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain %q", secret)
		}
	}
	logs := p.logs()
	if !hasLog(logs, "incoming request") {
		t.Error(`no "incoming request" log line: want debug logs (--log-level beats env)`)
	}
	for _, msg := range []string{"starting cerbai", "config loaded", "token refreshed",
		"starting proxy server"} {
		if !hasLog(logs, msg) {
			t.Errorf("no %q log line", msg)
		}
	}
	for _, l := range logs {
		if l["msg"] == "starting cerbai" && l["version"] != testVersion {
			t.Errorf("got version %v in the start line, want %s", l["version"], testVersion)
		}
	}
}

func TestProxy_RejectsMissingProxyKey(t *testing.T) {
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{})
	p := startCerbai(t, nil, f.args()...)
	for _, hdr := range [][]string{
		{"Authorization", ""},
		{"Authorization", "Bearer sk-wrong"},
	} {
		resp := chat(t, context.Background(), p.base, chatBody(false, "x"), hdr...)
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("with %v: got WWW-Authenticate %q, want Bearer", hdr, got)
		}
		if code := errorCode(t, resp); resp.StatusCode != 401 || code != "unauthorized" {
			t.Errorf("with %v: got %d %q, want 401 unauthorized", hdr, resp.StatusCode, code)
		}
	}
	if n := len(f.llm.Requests()); n != 0 {
		t.Errorf("got %d requests at the LLM, want 0", n)
	}
}

func TestProxy_StreamIsNotBuffered(t *testing.T) {
	const events = 5
	stepCh := make(chan struct{})
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{Step: stepCh, Events: events})
	p := startCerbai(t, nil, f.args()...)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp := chat(t, ctx, p.base, chatBody(true, "stream me through cerbai"))
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 ||
		!strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("got %d %q, want 200 text/event-stream", resp.StatusCode, ct)
	}

	// Lockstep: the LLM sends event k+1 only after we have read event k,
	// so a proxy that held back even one event would stall this loop.
	stream := fake.Events(resp.Body)
	var text strings.Builder
	for k := range events {
		if k > 0 {
			step(t, stepCh, "event "+itoa(k))
		}
		text.WriteString(deltaText(t, nextEvent(t, stream, "event "+itoa(k))))
	}
	step(t, stepCh, "[DONE]")
	if ev := nextEvent(t, stream, "[DONE]"); ev != "[DONE]" {
		t.Errorf("got final event %q, want [DONE]", ev)
	}
	if text.String() != "stream me through cerbai" {
		t.Errorf("got streamed text %q, want the echo", text.String())
	}
}

func TestProxy_ClientDisconnectCancelsUpstream(t *testing.T) {
	stepCh := make(chan struct{}) // never stepped: the stream stays open
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{Step: stepCh})
	p := startCerbai(t, nil, f.args()...)

	ctx, cancel := context.WithCancel(context.Background())
	resp := chat(t, ctx, p.base, chatBody(true, "x"), "X-Request-Id", "disconnect-1")
	defer resp.Body.Close()
	nextEvent(t, fake.Events(resp.Body), "first event")
	cancel()

	select {
	case id := <-f.llm.Cancelled():
		if id != "disconnect-1" {
			t.Errorf("got cancelled request %q, want disconnect-1", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream request not cancelled within 10s of the client leaving")
	}
}

func TestShutdown_SIGTERMLetsStreamFinish(t *testing.T) {
	const events = 4
	stepCh := make(chan struct{})
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{Step: stepCh, Events: events})
	p := startCerbai(t, nil, f.args("--shutdown-delay", "0s", "--shutdown-timeout", "30s")...)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp := chat(t, ctx, p.base, chatBody(true, "drain me"))
	defer resp.Body.Close()
	stream := fake.Events(resp.Body)
	nextEvent(t, stream, "first event")
	p.signal(syscall.SIGTERM)

	// The listener closes while the stream is still open.
	eventually(t, 10*time.Second, "new connections refused", func() bool {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	// The stream finishes: every event, then [DONE]; then exit 0.
	for k := 1; k < events; k++ {
		step(t, stepCh, "event "+itoa(k))
		nextEvent(t, stream, "event "+itoa(k))
	}
	step(t, stepCh, "[DONE]")
	if ev := nextEvent(t, stream, "[DONE]"); ev != "[DONE]" {
		t.Errorf("got final event %q, want [DONE]", ev)
	}
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Errorf("got exit status %d after SIGTERM, want 0", code)
	}
}

func TestProxy_UpstreamRejectionReplaysWithNewToken(t *testing.T) {
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{})
	p := startCerbai(t, nil, f.args()...)
	if err := f.ts.Wait(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	f.llm.RejectNext(1)

	status, text := completionText(t, chat(t, context.Background(), p.base,
		chatBody(false, "retry me")))
	if status != 200 || text != "retry me" {
		t.Errorf("got %d %q, want 200 with the echo (the 401 replayed)", status, text)
	}
	if n := f.ts.Count(); n != 2 {
		t.Errorf("got %d token requests, want 2 (one after the 401)", n)
	}
	reqs := f.llm.Requests()
	if len(reqs) != 2 || reqs[1].Header.Get("Authorization") != bearer("tok-2") {
		t.Fatalf("got %d LLM requests, want 2, the second with tok-2", len(reqs))
	}
	if string(reqs[0].Body) != string(reqs[1].Body) {
		t.Errorf("replayed body %q differs from the original %q", reqs[1].Body, reqs[0].Body)
	}
}

func TestTokens_ServiceDownAtStartThenRecovers(t *testing.T) {
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{})
	f.ts.SetDown(true)
	p := startCerbai(t, nil, f.args("--token-wait", "1s")...)

	// Without a usable token, a request waits at most --token-wait. The
	// bound checked is loose (the default wait is 10s) so speed cannot
	// break it.
	start := time.Now()
	resp := chat(t, context.Background(), p.base, chatBody(false, "x"))
	if code := errorCode(t, resp); resp.StatusCode != 503 || code != "token_unavailable" {
		t.Errorf("got %d %q, want 503 token_unavailable", resp.StatusCode, code)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("503 after %v, want it within about --token-wait (1s)", d)
	}
	if n := len(f.llm.Requests()); n != 0 {
		t.Errorf("got %d LLM requests without a token, want 0", n)
	}

	// Back up: requests succeed once cerbai's backoff lets it fetch again.
	f.ts.SetDown(false)
	eventually(t, 60*time.Second, "a request succeeds after recovery", func() bool {
		resp, err := chatErr(context.Background(), p.base, chatBody(false, "y"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func TestTokens_RotatedClientCertificateUsedOnNextFetch(t *testing.T) {
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{})
	p := startCerbai(t, nil, f.args()...)
	if err := f.ts.Wait(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// Swap the pair in place, as a secret volume does, then make the LLM
	// reject the current token so cerbai must fetch a new one.
	if err := f.pki.IssueClient("rotated-client", f.pki.ClientCertFile,
		f.pki.ClientKeyFile); err != nil {
		t.Fatal(err)
	}
	f.llm.RejectNext(1)
	status, _ := completionText(t, chat(t, context.Background(), p.base, chatBody(false, "x")))
	if status != 200 {
		t.Errorf("got %d, want 200", status)
	}
	reqs := f.ts.Requests()
	if len(reqs) != 2 {
		t.Fatalf("got %d token requests, want 2", len(reqs))
	}
	if reqs[0].ClientCN != fake.ClientCN || reqs[1].ClientCN != "rotated-client" {
		t.Errorf("got certificate CNs %q then %q, want %q then rotated-client",
			reqs[0].ClientCN, reqs[1].ClientCN, fake.ClientCN)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// hasLog reports whether a log line has the message msg.
func hasLog(logs []map[string]any, msg string) bool {
	for _, l := range logs {
		if l["msg"] == msg {
			return true
		}
	}
	return false
}

func TestTokens_ServiceDownWhileTokenUsableFailsNothing(t *testing.T) {
	// Fresh for 2s (the TTL), usable for about 9s (the 10s lifetime less
	// skew): an outage after the refresh-ahead point must not show.
	f := newFixture(t, fake.TokenServerOptions{ExpiresIn: 10}, fake.LLMOptions{})
	p := startCerbai(t, nil, f.args("--token-cache-ttl", "2s", "--log-level", "info")...)
	if err := f.ts.Wait(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	load := startLoad([]*proc{p}, 4)
	defer load.halt()
	load.waitOK(t, 20, "token service up")

	// Down: refreshes fail (the server still counts them), requests go on
	// with the cached token.
	f.ts.SetDown(true)
	down := f.ts.Count()
	if err := f.ts.Wait(down+2, 20*time.Second); err != nil {
		t.Fatalf("want refresh attempts while down: %v", err)
	}
	load.waitOK(t, 20, "token service down")

	// Up again: the next attempt gets tok-2 and requests carry it.
	f.ts.SetDown(false)
	eventually(t, 30*time.Second, "a new token after recovery", func() bool {
		return len(f.ts.Tokens()) == 2
	})
	eventually(t, 10*time.Second, "requests carry tok-2", func() bool {
		reqs := f.llm.Requests()
		return reqs[len(reqs)-1].Header.Get("Authorization") == bearer("tok-2")
	})
	load.halt()
	if n := load.failed.Load(); n != 0 {
		t.Errorf("got %d failed requests of %d, want 0; first: %v",
			n, n+load.ok.Load(), load.firstFail.Load())
	}
}

func TestTokens_ServiceDownPastUsabilityGives503ThenRecovers(t *testing.T) {
	// A 4s lifetime is usable for 3.6s (skew 0.4s): an outage outlasts it.
	f := newFixture(t, fake.TokenServerOptions{ExpiresIn: 4}, fake.LLMOptions{})
	p := startCerbai(t, nil, f.args("--token-cache-ttl", "1s", "--token-wait", "1s")...)
	if err := f.ts.Wait(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ready := func() int {
		resp, err := http.Get(p.base + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The token server answered; wait until cerbai holds the token too.
	eventually(t, 30*time.Second, "readiness reports a token", func() bool {
		return ready() == http.StatusOK
	})
	f.ts.SetDown(true)
	eventually(t, 30*time.Second, "readiness reports no usable token", func() bool {
		return ready() == http.StatusServiceUnavailable
	})

	// No usable token: every request gets a 503 of its own, and none of
	// them reaches the LLM with an expired token.
	sent := len(f.llm.Requests())
	for i := range 5 {
		resp := chat(t, context.Background(), p.base, chatBody(false, "x"))
		if code := errorCode(t, resp); resp.StatusCode != 503 || code != "token_unavailable" {
			t.Fatalf("request %d: got %d %q, want 503 token_unavailable", i, resp.StatusCode, code)
		}
	}
	if n := len(f.llm.Requests()); n != sent {
		t.Errorf("the LLM got %d requests while no token was usable, want 0", n-sent)
	}

	// The first successful fetch ends it.
	f.ts.SetDown(false)
	eventually(t, 90*time.Second, "a request succeeds after recovery", func() bool {
		resp, err := chatErr(context.Background(), p.base, chatBody(false, "y"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if got := ready(); got != http.StatusOK {
		t.Errorf("readiness after recovery: got %d, want 200", got)
	}
}
