package fake

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// TokenRequest is one request the token server received.
type TokenRequest struct {
	Form          url.Values // the parsed POST form
	Authorization string     // the raw Authorization header ("" when absent)
	ClientCN      string     // common name of the client certificate presented
	At            time.Time  // when the request arrived
}

// TokenServerOptions shape the token server's answers.
type TokenServerOptions struct {
	// ExpiresIn is the expires_in of issued tokens in seconds; 0 means 3600
	// and a negative value leaves expires_in out of the response.
	ExpiresIn int
	// Latency delays every answer (cut short when the client goes away).
	Latency time.Duration
}

// TokenServer is an OAuth2 token endpoint over mutual TLS: it answers
// grant_type=client_credentials POSTs at /oauth2/token with tokens
// "tok-1", "tok-2", ... and records every request.
type TokenServer struct {
	URL string // https://127.0.0.1:port/oauth2/token

	srv     *http.Server
	latency time.Duration

	// mu guards the fields below.
	mu        sync.Mutex
	expiresIn int
	down      bool
	requests  []TokenRequest
	tokens    []string
	changed   chan struct{} // closed and replaced whenever requests grows
}

// NewTokenServer starts a token server on 127.0.0.1 that requires a client
// certificate signed by p's CA.
func NewTokenServer(p *PKI, opts TokenServerOptions) (*TokenServer, error) {
	cfg, err := p.ServerTLS()
	if err != nil {
		return nil, fmt.Errorf("start token server: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start token server: %w", err)
	}
	s := &TokenServer{
		URL:     "https://" + ln.Addr().String() + "/oauth2/token",
		latency: opts.Latency,
		changed: make(chan struct{}),
	}
	s.SetExpiresIn(opts.ExpiresIn)
	mux := http.NewServeMux()
	mux.HandleFunc("/oauth2/token", s.handle)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(tls.NewListener(ln, cfg)) }()
	return s, nil
}

// Close stops the server and closes its connections.
func (s *TokenServer) Close() { _ = s.srv.Close() }

// SetDown makes every following request fail with 503
// {"error":"temporarily_unavailable"} (true) or succeed again (false).
func (s *TokenServer) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// SetExpiresIn changes expires_in for tokens issued from now on, with the
// meaning of TokenServerOptions.ExpiresIn.
func (s *TokenServer) SetExpiresIn(seconds int) {
	if seconds == 0 {
		seconds = 3600
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiresIn = seconds
}

// Requests returns a copy of every request received so far, failed ones
// included, in arrival order.
func (s *TokenServer) Requests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.requests...)
}

// Count is len(Requests()).
func (s *TokenServer) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// Tokens returns the tokens issued so far, in order.
func (s *TokenServer) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// Wait blocks until at least n requests have arrived, or fails after
// timeout.
func (s *TokenServer) Wait(n int, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		got, changed := len(s.requests), s.changed
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return fmt.Errorf("wait for %d token requests: got %d after %v", n, got, timeout)
		}
	}
}

func (s *TokenServer) handle(w http.ResponseWriter, r *http.Request) {
	// Record first, so Count and Wait see a request as soon as it arrives.
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	req := TokenRequest{
		Form:          r.PostForm,
		Authorization: r.Header.Get("Authorization"),
		At:            time.Now(),
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		req.ClientCN = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()

	// Latency, honouring a client that gives up.
	if s.latency > 0 {
		t := time.NewTimer(s.latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}

	// The answer: an OAuth2 error, or the next token.
	if req.Form.Get("grant_type") != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable")
		return
	}
	tok := "tok-" + strconv.Itoa(len(s.tokens)+1)
	s.tokens = append(s.tokens, tok)
	body := map[string]any{"access_token": tok, "token_type": "Bearer"}
	if s.expiresIn > 0 {
		body["expires_in"] = s.expiresIn
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

func oauthError(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]string{"error": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only fixed shapes are marshalled
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
