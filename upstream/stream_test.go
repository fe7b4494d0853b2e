package upstream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestProxy_SSEIsNotBuffered proves events are passed on one by one
// without timing: the upstream writes event k+1 only after the client has
// read event k through the proxy. A buffering proxy would deadlock here.
func TestProxy_SSEIsNotBuffered(t *testing.T) {
	const events = 5
	ack := make(chan struct{})
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for k := 0; k < events; k++ {
			fmt.Fprintf(w, "data: {\"k\":%d}\n\n", k)
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-ack:
			case <-r.Context().Done():
				return
			}
		}
	})
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, "")}))
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for k := 0; k < events; k++ {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: got error %v, want the event (is the proxy buffering?)", k, err)
		}
		if want := fmt.Sprintf("data: {\"k\":%d}\n", k); line != want {
			t.Fatalf("got %q, want %q", line, want)
		}
		if blank, _ := br.ReadString('\n'); blank != "\n" {
			t.Fatalf("got %q after event %d, want a blank line", blank, k)
		}
		ack <- struct{}{}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("got trailing %q, %v; want a clean end", rest, err)
	}
}

// TestProxy_ClientDisconnectCancelsUpstream checks that the upstream
// request ends when the client leaves mid-stream.
func TestProxy_ClientDisconnectCancelsUpstream(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		_ = http.NewResponseController(w).Flush()
		close(started)
		<-r.Context().Done()
		close(cancelled)
	})
	p := newProxy(t, Config{Target: rec.URL(t, "")})
	srv := serveProxy(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, started, "the upstream to start streaming")
	cancel()
	waitFor(t, cancelled, "the upstream request to be cancelled")
	// Poll (bounded) until the proxy's handler is done, then check it
	// blamed the client, not the upstream.
	for deadline := time.Now().Add(guard); p.Stats().Snapshot().ActiveStreams != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the proxy is still copying after the client left")
		}
		runtime.Gosched()
	}
	if errs := p.Stats().Snapshot().UpstreamErrors; errs[ErrKindReset] != 0 {
		t.Errorf("got upstream errors %v after a client disconnect, want none", errs)
	}
}

// TestProxy_StreamIdleTimeoutEndsSilentBody checks that a body that goes
// silent is ended, and the client sees it cut rather than complete.
func TestProxy_StreamIdleTimeoutEndsSilentBody(t *testing.T) {
	upstreamDone := make(chan struct{})
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		defer close(upstreamDone)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done() // silent until the proxy gives up
	})
	p := newProxy(t, Config{Target: rec.URL(t, ""), StreamIdleTimeout: 50 * time.Millisecond})
	srv := serveProxy(t, p)
	resp, err := http.Get(srv.URL + "/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if string(body) != "data: first\n\n" {
		t.Errorf("got body %q, want the one event before the silence", body)
	}
	if err == nil {
		t.Error("got a clean end, want the client to see the stream cut")
	}
	waitFor(t, upstreamDone, "the upstream request to be cancelled")
	if got := p.Stats().Snapshot().UpstreamErrors[ErrKindIdleTimeout]; got != 1 {
		t.Errorf("got %d idle timeouts, want 1", got)
	}
}

// TestProxy_UpstreamResetMidStreamIsCut checks that a body the upstream
// breaks off is not passed on as a complete one.
func TestProxy_UpstreamResetMidStreamIsCut(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "partial")
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // the upstream hangs up
	})
	p := newProxy(t, Config{Target: rec.URL(t, "")})
	srv := serveProxy(t, p)
	// Nothing was flushed yet (the body has a declared length), so the
	// cut may show before the headers or in the body; never as an end.
	resp, err := http.Get(srv.URL + "/v1/x")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("got a clean end, want the client to see the body cut")
	}
	if got := p.Stats().Snapshot().UpstreamErrors[ErrKindReset]; got != 1 {
		t.Errorf("got %d resets, want 1", got)
	}
}

// TestProxy_TrailersPass checks that the upstream's trailers reach the
// client.
func TestProxy_TrailersPass(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Trailer", "X-Checksum")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, "")}))
	resp, err := http.Get(srv.URL + "/v1/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	want := http.Header{"X-Checksum": {"abc"}, "X-Late": {"late"}}
	if diff := cmp.Diff(want, resp.Trailer); diff != "" {
		t.Errorf("trailers (-want +got):\n%s", diff)
	}
}

// rejectFirst answers 401 to the first request and 200 "second" after.
func rejectFirst(w http.ResponseWriter, r *http.Request, n int) {
	if n == 1 {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"token expired"}`)
		return
	}
	_, _ = io.WriteString(w, "second")
}

func TestProxy_ReplayAfterUpstream401(t *testing.T) {
	const body = `{"model":"m","messages":[]}`
	cases := []struct {
		name      string
		replayMax int64
		chunked   bool
		tokens    []string
		wantCode  int
		wantBody  string
		wantSent  int
		wantAuths []string
	}{
		{"small body is replayed", 1 << 20, false, []string{"old", "new"},
			200, "second", 2, []string{"Bearer old", "Bearer new"}},
		{"chunked small body is replayed", 1 << 20, true, []string{"old", "new"},
			200, "second", 2, []string{"Bearer old", "Bearer new"}},
		{"body over the replay bound passes the 401", 8, false, []string{"old", "new"},
			401, `{"error":"token expired"}`, 1, []string{"Bearer old"}},
		{"chunked body over the replay bound passes the 401", 8, true,
			[]string{"old", "new"}, 401, `{"error":"token expired"}`, 1, []string{"Bearer old"}},
		{"no new token", 1 << 20, false, []string{"old"},
			503, "token_unavailable", 1, []string{"Bearer old"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder(t, rejectFirst)
			tokens := newFakeTokens(c.tokens...)
			p := newProxy(t, Config{Target: rec.URL(t, ""), Tokens: tokens,
				ReplayMaxBody: c.replayMax})
			srv := serveProxy(t, p)
			var rd io.Reader = strings.NewReader(body)
			if c.chunked {
				rd = io.MultiReader(rd) // hides the length: sent chunked
			}
			resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", rd)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.wantCode || !strings.Contains(string(got), c.wantBody) {
				t.Errorf("got %d %q, want %d with %q", resp.StatusCode, got, c.wantCode,
					c.wantBody)
			}
			seen := rec.Seen()
			var auths []string
			for _, s := range seen {
				auths = append(auths, s.Header.Get("Authorization"))
				if s.Body != body {
					t.Errorf("upstream got body %q, want %q", s.Body, body)
				}
			}
			if diff := cmp.Diff(c.wantAuths, auths); diff != "" {
				t.Errorf("tokens the upstream saw (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"old"}, tokens.Invalidated()); diff != "" {
				t.Errorf("invalidated (-want +got):\n%s", diff)
			}
			wantRetries := uint64(c.wantSent - 1)
			if got := p.Stats().Snapshot().Retries; got != wantRetries {
				t.Errorf("got %d retries, want %d", got, wantRetries)
			}
		})
	}
}

// TestProxy_ReplayWithoutBody checks a GET is replayed too.
func TestProxy_ReplayWithoutBody(t *testing.T) {
	rec := newRecorder(t, rejectFirst)
	tokens := newFakeTokens("old", "new")
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, ""), Tokens: tokens}))
	resp, err := http.Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "second" {
		t.Errorf("got %d %q, want 200 \"second\"", resp.StatusCode, got)
	}
	if n := len(rec.Seen()); n != 2 {
		t.Errorf("got %d upstream requests, want 2", n)
	}
}

// TestProxy_PurgeOnlyListedStatuses checks that other statuses pass and
// keep the token.
func TestProxy_PurgeOnlyListedStatuses(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.WriteHeader(http.StatusForbidden)
	})
	tokens := newFakeTokens("old", "new")
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, ""), Tokens: tokens}))
	resp, err := http.Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(tokens.Invalidated()) != 0 {
		t.Errorf("got %d and invalidated %v, want 403 and none", resp.StatusCode,
			tokens.Invalidated())
	}
}

// TestProxy_TokenErrorIs503 checks a token source failure is answered,
// not forwarded without a token.
func TestProxy_TokenErrorIs503(t *testing.T) {
	rec := newRecorder(t, nil)
	p := newProxy(t, Config{Target: rec.URL(t, ""), Tokens: newFakeTokens()})
	srv := serveProxy(t, p)
	resp, err := http.Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || len(rec.Seen()) != 0 {
		t.Errorf("got %d with %d upstream requests, want 503 and none",
			resp.StatusCode, len(rec.Seen()))
	}
	if got := p.Stats().Snapshot().UpstreamErrors[ErrKindTokenUnavailable]; got != 1 {
		t.Errorf("got %d token_unavailable, want 1", got)
	}
}

// TestProxy_SecondRejectionPassesWithoutSecondPurge checks that an
// upstream refusing every token costs one purge and one replay, no more.
func TestProxy_SecondRejectionPassesWithoutSecondPurge(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.WriteHeader(http.StatusUnauthorized)
	})
	tokens := newFakeTokens("old", "new", "newer")
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, ""), Tokens: tokens}))
	resp, err := http.Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("got %d, want the upstream's 401", resp.StatusCode)
	}
	if n := len(rec.Seen()); n != 2 {
		t.Errorf("got %d upstream requests, want 2", n)
	}
	if diff := cmp.Diff([]string{"old"}, tokens.Invalidated()); diff != "" {
		t.Errorf("invalidated (-want +got):\n%s", diff)
	}
}
