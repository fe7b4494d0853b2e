package fake

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// LLMRequest is one request the fake LLM received, as it arrived.
type LLMRequest struct {
	Method, RequestURI, Host string
	Header                   http.Header
	Body                     []byte
}

// LLMOptions shape the fake LLM.
type LLMOptions struct {
	// Step, when set, paces streams: a stream writes its first event at once
	// and each following one (the final "data: [DONE]" included) only after
	// a value is received from Step. A test that reads event k before
	// sending on Step proves nothing between it and the LLM buffers.
	Step chan struct{}
	// ValidToken decides whether the bearer token is accepted; nil accepts
	// any non-empty credential. A rejected request gets an OpenAI-shaped
	// 401 (code invalid_api_key).
	ValidToken func(token string) bool
	// Events is the number of chat.completion.chunk events per stream;
	// 0 means 5.
	Events int
}

// LLM is an OpenAI-compatible API on plain HTTP: POST .../chat/completions
// (JSON, or SSE with "stream": true) and GET .../models under any base path
// (/v1/..., /openai/v1/...). The completion echoes the last user message.
// Each SSE event carries "sent_unix_nano", the moment it was written, so a
// client can measure delivery delay. Limitation: every request is kept in
// memory (Requests), bodies included, for the life of the LLM.
type LLM struct {
	URL string // http://127.0.0.1:port, no trailing slash

	srv       *http.Server
	opts      LLMOptions
	cancelled chan string

	// mu guards the fields below.
	mu       sync.Mutex
	requests []LLMRequest
	reject   int
	seq      int
}

// NewLLM starts the fake LLM on 127.0.0.1.
func NewLLM(opts LLMOptions) (*LLM, error) {
	if opts.Events <= 0 {
		opts.Events = 5
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start fake llm: %w", err)
	}
	l := &LLM{
		URL:       "http://" + ln.Addr().String(),
		opts:      opts,
		cancelled: make(chan string, 1024),
	}
	l.srv = &http.Server{Handler: http.HandlerFunc(l.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = l.srv.Serve(ln) }()
	return l, nil
}

// Close stops the server and closes its connections (streams end).
func (l *LLM) Close() { _ = l.srv.Close() }

// Requests returns a copy of every request received so far.
func (l *LLM) Requests() []LLMRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LLMRequest(nil), l.requests...)
}

// RejectNext makes the next n requests fail with 401 invalid_api_key,
// whatever their token.
func (l *LLM) RejectNext(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reject += n
}

// Cancelled delivers the X-Request-Id of each request whose context ended
// (the caller went away) before its handler finished. Limitation: it holds
// 1024 ids; later ones are dropped if nobody reads.
func (l *LLM) Cancelled() <-chan string { return l.cancelled }

func (l *LLM) serve(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if r.Context().Err() != nil {
			select {
			case l.cancelled <- r.Header.Get("X-Request-Id"):
			default:
			}
		}
	}()

	// Record the request as received, then decide on its credential.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<20))
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "body_unreadable",
			"could not read the request body")
		return
	}
	l.mu.Lock()
	l.requests = append(l.requests, LLMRequest{
		Method: r.Method, RequestURI: r.RequestURI, Host: r.Host,
		Header: r.Header.Clone(), Body: body,
	})
	l.seq++
	seq, rejected := l.seq, l.reject > 0
	if rejected {
		l.reject--
	}
	l.mu.Unlock()
	if rejected || !l.authorized(r.Header) {
		apiError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
			"Incorrect API key provided.")
		return
	}

	// Route on the path's tail, so any base path works.
	switch path := strings.TrimSuffix(r.URL.Path, "/"); {
	case strings.HasSuffix(path, "/chat/completions") && r.Method == http.MethodPost:
		l.chat(w, r, body, seq)
	case strings.HasSuffix(path, "/models") && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
			map[string]any{"id": "fake-model", "object": "model", "created": 1700000000,
				"owned_by": "cerbai-fake"},
		}})
	default:
		apiError(w, http.StatusNotFound, "invalid_request_error", "unknown_url",
			"Unknown request URL: "+r.Method+" "+r.URL.Path)
	}
}

// authorized reads the bearer token from Authorization (or, Azure style,
// from api-key) and applies ValidToken.
func (l *LLM) authorized(h http.Header) bool {
	tok := h.Get("Authorization")
	if len(tok) > 7 && strings.EqualFold(tok[:7], "bearer ") {
		tok = tok[7:]
	}
	if tok == "" {
		tok = h.Get("Api-Key")
	}
	if l.opts.ValidToken == nil {
		return tok != ""
	}
	return l.opts.ValidToken(tok)
}

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Stream        bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (l *LLM) chat(w http.ResponseWriter, r *http.Request, body []byte, seq int) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json",
			"We could not parse the JSON body of your request.")
		return
	}
	if req.Model == "" {
		req.Model = "fake-model"
	}
	reply := lastUserText(req)
	id := fmt.Sprintf("chatcmpl-fake-%d", seq)
	use := usage{PromptTokens: len(body) / 4, CompletionTokens: len(strings.Fields(reply))}
	use.TotalTokens = use.PromptTokens + use.CompletionTokens
	if !req.Stream {
		writeJSON(w, http.StatusOK, completion{
			ID: id, Object: "chat.completion", Created: time.Now().Unix(), Model: req.Model,
			Choices: []choice{{Message: &message{Role: "assistant", Content: reply},
				FinishReason: "stop"}},
			Usage: &use,
		})
		return
	}
	var final *usage
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		final = &use
	}
	l.stream(w, r, id, req.Model, reply, final)
}

// stream writes the reply as SSE chunks, split into Events pieces, an
// optional usage chunk, then [DONE].
func (l *LLM) stream(w http.ResponseWriter, r *http.Request, id, model, reply string,
	final *usage) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	pieces := split(reply, l.opts.Events)
	var events []func() []byte
	for k, p := range pieces {
		c := completion{ID: id, Object: "chat.completion.chunk", Model: model,
			Choices: []choice{{Delta: &message{Content: p}}}}
		if k == 0 {
			c.Choices[0].Delta.Role = "assistant"
		}
		if k == len(pieces)-1 {
			c.Choices[0].FinishReason = "stop"
		}
		events = append(events, c.encode)
	}
	if final != nil {
		events = append(events, (&completion{ID: id, Object: "chat.completion.chunk",
			Model: model, Choices: []choice{}, Usage: final}).encode)
	}
	events = append(events, nil) // [DONE]

	for k, ev := range events {
		if k > 0 && !l.waitStep(r) {
			return
		}
		line := []byte("data: [DONE]\n\n")
		if ev != nil {
			line = ev()
		}
		if _, err := w.Write(line); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// waitStep waits for the test's go-ahead; false when the caller left.
func (l *LLM) waitStep(r *http.Request) bool {
	if l.opts.Step == nil {
		return r.Context().Err() == nil
	}
	select {
	case <-l.opts.Step:
		return true
	case <-r.Context().Done():
		return false
	}
}

type completion struct {
	ID           string   `json:"id"`
	Object       string   `json:"object"`
	Created      int64    `json:"created"`
	Model        string   `json:"model"`
	Choices      []choice `json:"choices"`
	Usage        *usage   `json:"usage,omitempty"`
	SentUnixNano int64    `json:"sent_unix_nano,omitempty"`
}

// encode stamps the chunk with the current time and frames it as an SSE
// event.
func (c completion) encode() []byte {
	now := time.Now()
	c.Created, c.SentUnixNano = now.Unix(), now.UnixNano()
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // fixed shape
	}
	return append(append([]byte("data: "), b...), '\n', '\n')
}

type choice struct {
	Index        int       `json:"index"`
	Message      *message  `json:"message,omitempty"`
	Delta        *message  `json:"delta,omitempty"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason any       `json:"finish_reason"` // nil or "stop"
}

type message struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// lastUserText is the text of the last user message: a string content, or
// the text parts of an array content.
func lastUserText(req chatRequest) string {
	for i := len(req.Messages) - 1; i >= 0; i-- {
		m := req.Messages[i]
		if m.Role != "user" {
			continue
		}
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			return s
		}
		var parts []struct{ Type, Text string }
		_ = json.Unmarshal(m.Content, &parts)
		var b strings.Builder
		for _, p := range parts {
			if p.Type == "text" {
				b.WriteString(p.Text)
			}
		}
		return b.String()
	}
	return ""
}

// split cuts s into n pieces of nearly equal rune counts (some may be
// empty when s is short); joined, they give s back.
func split(s string, n int) []string {
	runes := []rune(s)
	out := make([]string, n)
	for k := range n {
		out[k] = string(runes[k*len(runes)/n : (k+1)*len(runes)/n])
	}
	return out
}

// apiError writes an OpenAI-shaped error.
func apiError(w http.ResponseWriter, status int, typ, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nil, "code": code,
	}})
}
