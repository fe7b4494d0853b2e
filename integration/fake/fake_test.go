package fake

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func newPKI(t *testing.T) *PKI {
	t.Helper()
	p, err := NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newTokenServer(t *testing.T, p *PKI, opts TokenServerOptions) *TokenServer {
	t.Helper()
	s, err := NewTokenServer(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func mtlsClient(t *testing.T, p *PKI) *http.Client {
	t.Helper()
	cfg, err := p.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func postToken(t *testing.T, c *http.Client, u string) (int, map[string]any) {
	t.Helper()
	resp, err := c.PostForm(u, url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestPKI_ClientCertVerifiesAgainstCA(t *testing.T) {
	p := newPKI(t)
	for _, name := range []string{"client", "rotated"} {
		certFile, keyFile := p.ClientCertFile, p.ClientKeyFile
		if name == "rotated" {
			if err := p.IssueClient("rotated", certFile, keyFile); err != nil {
				t.Fatal(err)
			}
		}
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatalf("%s: load pair: %v", name, err)
		}
		if _, err := pair.Leaf.Verify(x509Opts(p)); err != nil {
			t.Errorf("%s: verify against CA: %v", name, err)
		}
	}
}

func TestTokenServer_IssuesTokensAndRecordsRequests(t *testing.T) {
	p := newPKI(t)
	s := newTokenServer(t, p, TokenServerOptions{})
	c := mtlsClient(t, p)
	for i, want := range []string{"tok-1", "tok-2"} {
		status, body := postToken(t, c, s.URL)
		if status != 200 || body["access_token"] != want || body["expires_in"] != 3600.0 {
			t.Errorf("request %d: got %d %v, want 200 %s expires_in 3600", i, status, body, want)
		}
	}
	reqs := s.Requests()
	if len(reqs) != 2 || reqs[0].ClientCN != ClientCN ||
		reqs[0].Form.Get("grant_type") != "client_credentials" {
		t.Fatalf("got requests %+v, want 2 with CN %q", reqs, ClientCN)
	}
	if got := s.Tokens(); strings.Join(got, ",") != "tok-1,tok-2" {
		t.Errorf("got tokens %v, want [tok-1 tok-2]", got)
	}
}

func TestTokenServer_DownAndExpiresIn(t *testing.T) {
	p := newPKI(t)
	s := newTokenServer(t, p, TokenServerOptions{ExpiresIn: -1})
	c := mtlsClient(t, p)
	if _, body := postToken(t, c, s.URL); body["expires_in"] != nil {
		t.Errorf("got expires_in %v, want none", body["expires_in"])
	}
	s.SetDown(true)
	if status, body := postToken(t, c, s.URL); status != 503 ||
		body["error"] != "temporarily_unavailable" {
		t.Errorf("down: got %d %v, want 503 temporarily_unavailable", status, body)
	}
	s.SetDown(false)
	s.SetExpiresIn(7)
	if status, body := postToken(t, c, s.URL); status != 200 || body["expires_in"] != 7.0 {
		t.Errorf("up: got %d %v, want 200 expires_in 7", status, body)
	}
	if got := s.Count(); got != 3 {
		t.Errorf("got Count %d, want 3 (failed requests count)", got)
	}
}

func TestTokenServer_RequiresClientCertificate(t *testing.T) {
	p := newPKI(t)
	s := newTokenServer(t, p, TokenServerOptions{})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.CAPool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).PostForm(s.URL, url.Values{})
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d without a client certificate, want a TLS error", resp.StatusCode)
	}
	if s.Count() != 0 {
		t.Errorf("got %d recorded requests, want 0", s.Count())
	}
}

func TestTokenServer_WaitAndLatency(t *testing.T) {
	p := newPKI(t)
	s := newTokenServer(t, p, TokenServerOptions{Latency: 50 * time.Millisecond})
	if err := s.Wait(1, 10*time.Millisecond); err == nil {
		t.Fatal("Wait(1) with no request: got nil, want an error")
	}
	c := mtlsClient(t, p)
	start := time.Now()
	go func() {
		if resp, err := c.PostForm(s.URL, nil); err == nil {
			resp.Body.Close()
		}
	}()
	if err := s.Wait(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Latency is a lower bound, which no machine speed can break.
	if _, body := postToken(t, c, s.URL); body["access_token"] == nil ||
		time.Since(start) < 50*time.Millisecond {
		t.Errorf("got %v after %v, want a token after at least 50ms", body, time.Since(start))
	}
}

func newLLM(t *testing.T, opts LLMOptions) *LLM {
	t.Helper()
	l, err := NewLLM(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func chat(t *testing.T, ctx context.Context, u, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer tok-1")
	req.Header.Set("X-Request-Id", "req-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestLLM_CompletionEchoesLastUserMessage(t *testing.T) {
	l := newLLM(t, LLMOptions{})
	resp := chat(t, context.Background(), l.URL+"/openai/v1/chat/completions?api-version=1",
		`{"model":"m","messages":[{"role":"user","content":"first"},
		{"role":"user","content":[{"type":"text","text":"hello"}]}]}`)
	defer resp.Body.Close()
	var got struct {
		Object  string
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || got.Object != "chat.completion" || len(got.Choices) != 1 ||
		got.Choices[0].Message.Content != "hello" || got.Choices[0].FinishReason != "stop" ||
		got.Usage.TotalTokens == 0 {
		t.Errorf("got %d %+v, want 200 chat.completion echoing hello", resp.StatusCode, got)
	}
	reqs := l.Requests()
	if len(reqs) != 1 || reqs[0].RequestURI != "/openai/v1/chat/completions?api-version=1" {
		t.Errorf("got requests %+v, want the raw RequestURI recorded", reqs)
	}
}

func TestLLM_RejectsBadTokens(t *testing.T) {
	l := newLLM(t, LLMOptions{ValidToken: func(tok string) bool { return tok == "tok-1" }})
	l.RejectNext(1)
	for i, want := range []int{401, 200} {
		resp := chat(t, context.Background(), l.URL+"/v1/chat/completions",
			`{"messages":[{"role":"user","content":"x"}]}`)
		var body struct{ Error struct{ Code string } }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 401 && body.Error.Code != "invalid_api_key") {
			t.Errorf("request %d: got %d %+v, want %d", i, resp.StatusCode, body, want)
		}
	}
	req, _ := http.NewRequest("GET", l.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer other")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("invalid token: got %d, want 401", resp.StatusCode)
	}
}

func TestLLM_StreamWaitsForStep(t *testing.T) {
	step := make(chan struct{})
	l := newLLM(t, LLMOptions{Step: step, Events: 3})
	resp := chat(t, context.Background(), l.URL+"/v1/chat/completions",
		`{"stream":true,"messages":[{"role":"user","content":"abcdef"}]}`)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("got Content-Type %q, want text/event-stream", ct)
	}
	events := Events(resp.Body)
	var text string
	for k := range 4 {
		if k > 0 {
			step <- struct{}{} // blocks unless the fake waits for it
		}
		ev, ok := <-events
		if !ok {
			t.Fatalf("stream ended before event %d", k)
		}
		if k == 3 {
			if ev != "[DONE]" {
				t.Errorf("got last event %q, want [DONE]", ev)
			}
			break
		}
		var c struct {
			Choices []struct{ Delta struct{ Content string } }
			Sent    int64 `json:"sent_unix_nano"`
		}
		if err := json.Unmarshal([]byte(ev), &c); err != nil || c.Sent == 0 {
			t.Fatalf("event %d %q: want a chunk with sent_unix_nano (%v)", k, ev, err)
		}
		text += c.Choices[0].Delta.Content
		select {
		case ev := <-events:
			t.Fatalf("got event %q before Step, want none", ev)
		default:
		}
	}
	if text != "abcdef" {
		t.Errorf("got streamed text %q, want abcdef", text)
	}
}

func TestLLM_ReportsCancelledStream(t *testing.T) {
	l := newLLM(t, LLMOptions{Step: make(chan struct{})})
	ctx, cancel := context.WithCancel(context.Background())
	resp := chat(t, ctx, l.URL+"/v1/chat/completions",
		`{"stream":true,"messages":[{"role":"user","content":"x"}]}`)
	defer resp.Body.Close()
	<-Events(resp.Body)
	cancel()
	select {
	case id := <-l.Cancelled():
		if id != "req-1" {
			t.Errorf("got cancelled id %q, want req-1", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no cancellation reported within 10s")
	}
}

func x509Opts(p *PKI) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: p.CAPool,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}
