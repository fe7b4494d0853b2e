package upstream

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// benchWriter is a ResponseWriter that keeps nothing, so benchmarks
// measure the proxy rather than a recorder.
type benchWriter struct {
	h http.Header
	n int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *benchWriter) WriteHeader(int)             {}
func (w *benchWriter) Flush()                      {}

const smallJSONResponse = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,` +
	`"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}]}`

// memBody is a response body the in-memory upstream hands out.
type memBody struct{ strings.Reader }

func (*memBody) Close() error { return nil }

// BenchmarkProxy_SmallJSON measures one chat completion through the proxy
// with production settings (replay buffer, idle timeout, info logger).
// The in-memory upstream isolates the proxy; it costs 2 of the
// allocations (its Response and body).
func BenchmarkProxy_SmallJSON(b *testing.B) {
	respHeader := http.Header{"Content-Type": {"application/json"},
		"Content-Length": {"120"}, "X-Request-Id": {"up-1"}}
	tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		body := &memBody{}
		body.Reset(smallJSONResponse)
		return &http.Response{StatusCode: 200, Header: respHeader,
			ContentLength: int64(len(smallJSONResponse)), Body: body}, nil
	})
	target, _ := url.Parse("https://llm.test/openai")
	p, err := New(Config{Target: target, Tokens: newFakeTokens("token"), Transport: tr,
		TokenPrefix: "Bearer ", StreamIdleTimeout: 5 * time.Minute,
		MaxRequestBody: 32 << 20, ReplayMaxBody: 1 << 20, PurgeOnStatus: []int{401},
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	reqBody := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}`)
	r := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	r.Header = sdkHeaders()
	r.RemoteAddr = "10.0.0.1:43210"
	var rd bytes.Reader
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(reqBody)
		r.Body, r.ContentLength = io.NopCloser(&rd), int64(len(reqBody))
		clear(w.h)
		p.ServeHTTP(w, r)
	}
	if w.n == 0 {
		b.Fatal("no response body written")
	}
}

// smallJSONUpstream is a loopback LLM that reads the body and answers
// smallJSONResponse; it stops when the benchmark ends.
func smallJSONUpstream(b *testing.B) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, smallJSONResponse)
	}))
	b.Cleanup(up.Close)
	return up
}

// BenchmarkProxy_SmallJSONLoopback is the same request through real
// loopback servers: proxy and upstream both behind net/http.
func BenchmarkProxy_SmallJSONLoopback(b *testing.B) {
	up := smallJSONUpstream(b)
	target, _ := url.Parse(up.URL)
	tr, _ := NewTransport(TransportConfig{})
	defer tr.CloseIdleConnections()
	p, err := New(Config{Target: target, Tokens: newFakeTokens("token"), Transport: tr,
		TokenPrefix: "Bearer ", StreamIdleTimeout: 5 * time.Minute, ReplayMaxBody: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(p)
	defer srv.Close()
	client := srv.Client()
	reqBody := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}`
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Post(srv.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(reqBody))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// eventReader yields one SSE event per Read, like a streaming upstream.
type eventReader struct {
	event []byte
	left  int
}

func (e *eventReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		return 0, io.EOF
	}
	e.left--
	return copy(p, e.event), nil
}

type nopFlusher struct{}

func (nopFlusher) Flush() error { return nil }

// BenchmarkCopy_Stream measures the copy loop per SSE event: read, idle
// timer reset, write, flush.
func BenchmarkCopy_Stream(b *testing.B) {
	event := []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":` +
		`[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}` + "\n\n")
	idle := time.AfterFunc(time.Hour, func() {})
	defer idle.Stop()
	src := &eventReader{event: event}
	b.SetBytes(int64(len(event)))
	b.ReportAllocs()
	b.ResetTimer()
	const perOp = 100
	for i := 0; i < b.N; i += perOp {
		src.left = min(perOp, b.N-i)
		_, _, err := copyBody(io.Discard, src, streamBufs, nopFlusher{}, idle, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopy_Bulk measures the copy loop on a 1 MiB body.
func BenchmarkCopy_Bulk(b *testing.B) {
	data := bytes.Repeat([]byte("x"), 1<<20)
	idle := time.AfterFunc(time.Hour, func() {})
	defer idle.Stop()
	var rd bytes.Reader
	var src io.Reader = struct{ io.Reader }{&rd} // hide WriterTo: the loop reads
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(data)
		if _, _, err := copyBody(io.Discard, src, largeBufs, nil, idle, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransport_RoundTrip justifies the plain pool (plain.go): the
// same small POST over loopback keep-alive connections, from parallel
// goroutines, on the plain pool and on the tuned http.Transport it
// replaces for plain-HTTP upstreams.
func BenchmarkTransport_RoundTrip(b *testing.B) {
	up := smallJSONUpstream(b)
	tr, err := NewTransport(TransportConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	const reqBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}`
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"plain pool", tr},
		{"http.Transport", tr.std},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				body := strings.NewReader(reqBody)
				for pb.Next() {
					body.Reset(reqBody)
					req, err := http.NewRequest("POST", up.URL+"/v1/chat/completions",
						io.NopCloser(body))
					if err != nil {
						b.Error(err)
						return
					}
					req.ContentLength = int64(len(reqBody))
					resp, err := c.rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
