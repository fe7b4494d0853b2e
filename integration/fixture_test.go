package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cerbai/cerbai/integration/fake"
)

const (
	proxyKey     = "sk-test-key"
	clientID     = "test-client"
	clientSecret = "s3cr:et/+ x" // needs form encoding before Basic
)

// fixture is the world around one or more cerbai processes: a PKI, the
// mTLS token server and the fake LLM.
type fixture struct {
	pki        *fake.PKI
	ts         *fake.TokenServer
	llm        *fake.LLM
	secretFile string
}

func newFixture(t *testing.T, tsOpts fake.TokenServerOptions, llmOpts fake.LLMOptions) *fixture {
	t.Helper()
	dir := t.TempDir()
	pki, err := fake.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := fake.NewTokenServer(pki, tsOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Close)
	llm, err := fake.NewLLM(llmOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(llm.Close)
	f := &fixture{pki: pki, ts: ts, llm: llm, secretFile: filepath.Join(dir, "client-secret")}
	if err := os.WriteFile(f.secretFile, []byte(clientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// args is a complete flag set for cerbai against the fixture, then extra
// (a later flag wins).
func (f *fixture) args(extra ...string) []string {
	return append([]string{
		"--llm-url", f.llm.URL,
		"--token-endpoint", f.ts.URL,
		"--client-id", clientID,
		"--client-secret-file", f.secretFile,
		"--tls-cert-file", f.pki.ClientCertFile,
		"--tls-key-file", f.pki.ClientKeyFile,
		"--tls-ca-file", f.pki.CAFile,
		"--proxy-token", "ci=" + proxyKey,
		"--log-level", "debug",
		"--access-log",
	}, extra...)
}

// chatBody is a chat completion request asking for msg.
func chatBody(stream bool, msg string) string {
	b, _ := json.Marshal(map[string]any{
		"model": "fake-model", "stream": stream,
		"messages": []map[string]string{{"role": "user", "content": msg}},
	})
	return string(b)
}

// client has a large idle pool for load runs; it never times out on its
// own (tests bound streams with contexts).
var client = &http.Client{Transport: &http.Transport{
	MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: 30 * time.Second,
}}

// chat posts a chat completion with the proxy key and returns the response.
func chat(t *testing.T, ctx context.Context, base, body string, hdr ...string) *http.Response {
	t.Helper()
	resp, err := chatErr(ctx, base, body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// chatErr is chat for goroutines: the error is returned, not reported.
// hdr holds name, value pairs; without an Authorization pair the proxy key
// is sent as a bearer token.
func chatErr(ctx context.Context, base, body string, hdr ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+proxyKey)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if req.Header.Get("Authorization") == "" {
		req.Header.Del("Authorization")
	}
	return client.Do(req)
}

// completionText reads a non-streaming completion: status and content.
func completionText(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	var c struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if json.Unmarshal(raw, &c) != nil || len(c.Choices) == 0 {
		return resp.StatusCode, string(raw)
	}
	return resp.StatusCode, c.Choices[0].Message.Content
}

// errorCode reads an OpenAI-shaped error body's code.
func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var e struct {
		Error struct {
			Type string
			Code string
		}
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Errorf("error body %q is not JSON: %v", raw, err)
	}
	return e.Error.Code
}

// nextEvent waits for the next event; a stream that ends or stalls fails
// the test.
func nextEvent(t *testing.T, events <-chan string, what string) string {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatalf("%s: stream ended", what)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not delivered within 10s", what)
		return ""
	}
}

// step lets the fake LLM send its next event.
func step(t *testing.T, ch chan<- struct{}, what string) {
	t.Helper()
	select {
	case ch <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the fake LLM was not waiting to send", what)
	}
}

// deltaText is the content of one chat.completion.chunk.
func deltaText(t *testing.T, ev string) string {
	t.Helper()
	var c struct {
		Object  string
		Choices []struct{ Delta struct{ Content string } }
	}
	if err := json.Unmarshal([]byte(ev), &c); err != nil || c.Object != "chat.completion.chunk" {
		t.Fatalf("event %q: want a chat.completion.chunk (%v)", ev, err)
	}
	if len(c.Choices) == 0 {
		return ""
	}
	return c.Choices[0].Delta.Content
}

// eventually polls cond every 20ms until it holds or limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("%s: not true within %v", what, limit)
		case <-tick.C:
		}
	}
}

func bearer(tok string) string { return fmt.Sprintf("Bearer %s", tok) }
