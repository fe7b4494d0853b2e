package load

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Paths the fake LLM answers. Any other path gets the small chat answer, so
// a proxy's path handling does not matter to the measurements.
const (
	PathChat  = "/v1/chat/completions" // small JSON, or SSE with ?events=
	PathLarge = "/v1/large"            // ?bytes=N of filler
	PathIdle  = "/v1/idle"             // one SSE event, then silence
)

// Limits on what a request may ask of the fake, so no request can make it
// run or allocate without bound.
const (
	maxEvents   = 100_000
	maxInterval = 10 * time.Second
	maxLarge    = 4 << 30
)

// chatResponse is a typical non-streaming chat completion, sent as is.
var chatResponse = []byte(`{"id":"chatcmpl-bench","object":"chat.completion",` +
	`"created":1700000000,"model":"bench","choices":[{"index":0,"message":` +
	`{"role":"assistant","content":"Hello! How can I help you today?"},` +
	`"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,` +
	`"total_tokens":18}}`)

// FakeLLM is an OpenAI-compatible server built for measuring, not for
// checking: it records nothing and allocates little per request.
//
// POST /v1/chat/completions answers small JSON; with ?events=N&interval=D
// it streams N SSE chunks D apart, each carrying its send time in unix
// nanoseconds as "t", then "data: [DONE]". GET /v1/large?bytes=N sends N
// bytes from a preallocated buffer. GET /v1/idle sends one event and holds
// the stream open until the client leaves or the fake closes.
type FakeLLM struct {
	URL string // http:// or https://127.0.0.1:port, no trailing slash

	srv     *http.Server
	filler  []byte        // preallocated body for /v1/large
	closing chan struct{} // closed by Close to release idle streams
	once    sync.Once
}

// NewFakeLLM starts a fake LLM on a free loopback port, over plain HTTP.
func NewFakeLLM() (*FakeLLM, error) { return startFakeLLM(nil) }

// NewFakeLLMTLS starts a fake LLM that serves TLS with the given
// certificate and offers HTTP/2 and HTTP/1.1, as a real LLM endpoint does.
func NewFakeLLMTLS(certFile, keyFile string) (*FakeLLM, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("start fake llm: %w", err)
	}
	return startFakeLLM(&tls.Config{Certificates: []tls.Certificate{cert},
		MinVersion: tls.VersionTLS12})
}

func startFakeLLM(tlsConf *tls.Config) (*FakeLLM, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start fake llm: %w", err)
	}
	scheme := "http://"
	if tlsConf != nil {
		scheme = "https://"
	}
	f := &FakeLLM{
		URL:     scheme + ln.Addr().String(),
		filler:  []byte(strings.Repeat("0123456789abcdef", 1<<16)), // 1 MiB
		closing: make(chan struct{}),
	}
	f.srv = &http.Server{
		Handler:           f,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         tlsConf, // ServeTLS adds HTTP/2 to it
		// Clients that vanish mid-stream are expected during measurements.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() {
		if tlsConf != nil {
			_ = f.srv.ServeTLS(ln, "", "")
			return
		}
		_ = f.srv.Serve(ln)
	}()
	return f, nil
}

// Close releases held streams and stops the server.
func (f *FakeLLM) Close() error {
	f.once.Do(func() { close(f.closing) })
	return f.srv.Close()
}

// ServeHTTP dispatches on the path's last element, so the fake works behind
// a proxy that adds a base path.
func (f *FakeLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Drain the request body so the connection can be kept alive.
	_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 1<<20))
	q := r.URL.Query()
	switch {
	case strings.HasSuffix(r.URL.Path, "/large"):
		f.serveLarge(w, q.Get("bytes"))
	case strings.HasSuffix(r.URL.Path, "/idle"):
		f.serveIdle(w, r)
	case q.Has("events"):
		f.serveSSE(w, r, q.Get("events"), q.Get("interval"))
	default:
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(chatResponse))}
		_, _ = w.Write(chatResponse)
	}
}

func (f *FakeLLM) serveLarge(w http.ResponseWriter, bytesParam string) {
	n, err := strconv.ParseInt(bytesParam, 10, 64)
	if err != nil || n < 0 || n > maxLarge {
		http.Error(w, "bytes must be 0.."+strconv.Itoa(maxLarge), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	for n > 0 {
		chunk := f.filler[:min(n, int64(len(f.filler)))]
		if _, err := w.Write(chunk); err != nil {
			return
		}
		n -= int64(len(chunk))
	}
}

func (f *FakeLLM) serveSSE(w http.ResponseWriter, r *http.Request, events, interval string) {
	n, err := strconv.Atoi(events)
	if err != nil || n < 0 || n > maxEvents {
		http.Error(w, "events must be 0.."+strconv.Itoa(maxEvents), http.StatusBadRequest)
		return
	}
	every := 10 * time.Millisecond
	if interval != "" {
		every, err = time.ParseDuration(interval)
		if err != nil || every <= 0 || every > maxInterval {
			http.Error(w, "interval must be a duration in (0, 10s]", http.StatusBadRequest)
			return
		}
	}
	startSSE(w)
	rc := http.NewResponseController(w)
	tick := time.NewTicker(every)
	defer tick.Stop()
	buf := make([]byte, 0, 256)
	for i := range n {
		if i > 0 {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			case <-f.closing:
				return
			}
		}
		// The stamp is taken just before the write, so the client's delay
		// covers only delivery.
		buf = appendChunk(buf[:0], i, time.Now().UnixNano())
		if _, err := w.Write(buf); err != nil || rc.Flush() != nil {
			return
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
	_ = rc.Flush()
}

func (f *FakeLLM) serveIdle(w http.ResponseWriter, r *http.Request) {
	startSSE(w)
	if _, err := w.Write(appendChunk(nil, 0, time.Now().UnixNano())); err != nil {
		return
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		return
	}
	select {
	case <-r.Context().Done():
	case <-f.closing:
	}
}

func startSSE(w http.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["Cache-Control"] = []string{"no-cache"}
	w.WriteHeader(http.StatusOK)
}

// appendChunk appends one SSE event shaped like an OpenAI stream chunk with
// the send time t (unix nanoseconds) in its "t" field.
func appendChunk(b []byte, i int, t int64) []byte {
	b = append(b, `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"choices":[{"index":0,"delta":{"content":"tok`...)
	b = strconv.AppendInt(b, int64(i), 10)
	return append(b, `"}}]}`+"\n\n"...)
}
