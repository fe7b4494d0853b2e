package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// plainPool sends HTTP/1.1 requests to one plain-HTTP upstream address
// over a keep-alive pool, on the caller's goroutine. http.Transport keeps
// a read loop and a write loop goroutine per connection and hands every
// request and answer between them; an open stream holds both for its
// whole life (about 8 KiB of stack and 3 KiB of state, measured with the
// load tool), and each hand-off costs a goroutine switch. Here the
// handler's goroutine writes the request and reads the answer itself;
// net/http still does the wire format (Request.Write, ReadResponse).
//
// What http.Transport learns from its read loop is done differently:
//   - A connection the upstream closed while it sat idle is found with a
//     non-blocking peek when it is taken from the pool (peekAlive).
//   - A cancelled request context interrupts the connection through
//     context.AfterFunc, which needs no goroutine until it fires.
//   - Idle connections expire after idleTimeout, or sooner when the
//     upstream announces a shorter keep-alive (keepAliveLimit), closed by
//     one timer that is armed only while the pool holds any.
//
// TLS upstreams, upstreams reached through an HTTP proxy, and request
// bodies over plainBodyMax or of unknown length stay on http.Transport
// (see Transport).
type plainPool struct {
	addr          string // host:port
	dial          dialFunc
	headerTimeout time.Duration
	maxHeader     int64
	idleTimeout   time.Duration
	maxIdle       int

	mu      sync.Mutex
	idle    []*plainConn // the most recently used last
	sweep   *time.Timer  // runs expire; made on first use
	sweepAt time.Time    // when sweep fires; zero while it is not armed
}

// Request bytes are written through a pooled buffer, so an open stream
// holds none; 4 KiB takes the headers and a small body in one write.
const plainWriteBufSize = 4 << 10

var plainWriters = sync.Pool{New: func() any {
	return bufio.NewWriterSize(nil, plainWriteBufSize)
}}

// max1xx bounds the informational answers skipped before the real one,
// as http.Transport does.
const max1xx = 5

// errRespHeaderTooLarge is returned when the upstream's header block
// passes maxHeader; classify answers it with failHeaderTooLarge.
var errRespHeaderTooLarge = errors.New("upstream: server response headers exceeded the limit")

// errTooMany1xx ends an answer that keeps sending informational heads.
var errTooMany1xx = errors.New("upstream: too many 1xx informational responses")

// errUnexpected101 is returned for an upgrade nobody asked for: cerbai
// drops Upgrade from every request.
var errUnexpected101 = errors.New("upstream: unexpected 101 Switching Protocols")

func newPlainPool(addr string, cfg TransportConfig, dial dialFunc) *plainPool {
	return &plainPool{
		addr:          addr,
		dial:          dial,
		headerTimeout: cfg.ResponseHeaderTimeout,
		maxHeader:     cfg.MaxResponseHeaderBytes,
		idleTimeout:   idleConnTimeout,
		maxIdle:       idlePoolSize,
	}
}

// RoundTrip sends req on a pooled or new connection. A reused connection
// that fails before the upstream can have acted on the request is
// replaced once by a new one, under http.Transport's rules (retryable).
//
// Limitation: an upstream that closes a pooled connection in the moment
// between peekAlive and the request reaching it fails a POST with no
// second try, as with http.Transport. And the request is written before
// the answer is read: an upstream that answers early, stops reading and
// resets the connection while a body is still being sent can lose its
// answer to the reset (the client then gets 502). Transport sends only
// bodies of known length up to plainBodyMax here, so the window is the
// time to write at most 1 MiB.
func (p *plainPool) RoundTrip(req *http.Request) (*http.Response, error) {
	for retried := false; ; retried = true {
		c, err := p.get(req.Context())
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		c.close()
		if retried || !c.reused || !c.retryable(req, err) {
			closeBody(req)
			return nil, err
		}
		if req, err = rewind(req); err != nil {
			return nil, err
		}
	}
}

// rewind returns req with a new body from GetBody, or req itself when it
// has none.
func rewind(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	r := new(http.Request)
	*r = *req
	r.Body = body
	return r, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// get returns the most recently used live idle connection, or dials.
func (p *plainPool) get(ctx context.Context) (*plainConn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if now.Sub(c.idleAt) < c.idleLimit && c.peekAlive() {
			c.reused = true
			return c, nil
		}
		c.close()
	}
	nc, err := p.dial(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	c := &plainConn{pool: p, nc: nc, limit: -1}
	c.br = bufio.NewReaderSize(c, connBufSize)
	if tc, ok := nc.(*net.TCPConn); ok {
		c.raw, _ = tc.SyscallConn()
	}
	return c, nil
}

// put returns a connection whose exchange ended cleanly to the pool.
func (p *plainPool) put(c *plainConn) {
	c.idleAt = time.Now()
	p.mu.Lock()
	if len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	if end := c.idleAt.Add(c.idleLimit); p.sweepAt.IsZero() || end.Before(p.sweepAt) {
		p.armLocked(end, c.idleAt)
	}
	p.mu.Unlock()
}

// armLocked sets the sweep to fire at the time at, now being now. p.mu
// must be held. One timer serves the pool's life: Reset on an AfterFunc
// timer reschedules it whether or not it has fired.
func (p *plainPool) armLocked(at, now time.Time) {
	p.sweepAt = at
	if p.sweep == nil {
		p.sweep = time.AfterFunc(at.Sub(now), p.expire)
		return
	}
	p.sweep.Reset(at.Sub(now))
}

// expire closes the connections idle past their limit and re-arms the
// sweep for the next limit while any remain. The limits differ by
// connection (an upstream's Keep-Alive timeout), so every one is looked
// at; the pool holds at most maxIdle.
func (p *plainPool) expire() {
	now := time.Now()
	var stale []*plainConn
	var next time.Time
	p.mu.Lock()
	kept := p.idle[:0]
	for _, c := range p.idle {
		end := c.idleAt.Add(c.idleLimit)
		if !now.Before(end) {
			stale = append(stale, c)
			continue
		}
		kept = append(kept, c)
		if next.IsZero() || end.Before(next) {
			next = end
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	p.sweepAt = time.Time{}
	if len(p.idle) > 0 {
		p.armLocked(next, now)
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// closeIdle closes every idle connection.
func (p *plainPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweepAt = time.Time{}
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// plainConn is one upstream connection. It is the reader under br and the
// writer under the pooled write buffer, counting bytes both ways and
// holding reads of a header block to maxHeader bytes.
type plainConn struct {
	pool   *plainPool
	nc     net.Conn
	raw    syscall.RawConn // nc's socket, for peekAlive; nil if none
	br     *bufio.Reader
	idleAt time.Time
	// idleLimit is how long the connection may sit idle and still be
	// reused: idleTimeout, or less when the upstream says so.
	idleLimit time.Duration
	reused    bool

	peek     [1]byte
	peekErr  error
	peekFn   func(fd uintptr) bool
	limit    int64 // bytes left to read of a header block; -1: no limit
	nread    int64
	nwritten int64
	werr     error // the first error writing to nc

	mu          sync.Mutex // orders deadline changes with interrupt
	interrupted bool
}

func (c *plainConn) Read(b []byte) (int, error) {
	if c.limit == 0 {
		return 0, errRespHeaderTooLarge
	}
	if c.limit > 0 && int64(len(b)) > c.limit {
		b = b[:c.limit]
	}
	n, err := c.nc.Read(b)
	c.nread += int64(n)
	if c.limit > 0 {
		c.limit -= int64(n)
	}
	return n, err
}

func (c *plainConn) Write(b []byte) (int, error) {
	n, err := c.nc.Write(b)
	c.nwritten += int64(n)
	if err != nil && c.werr == nil {
		c.werr = err
	}
	return n, err
}

// interrupt ends any read or write on the connection; it runs when the
// request's context is done. The connection is not reused after it.
func (c *plainConn) interrupt() {
	c.mu.Lock()
	c.interrupted = true
	_ = c.nc.SetDeadline(aLongTimeAgo)
	c.mu.Unlock()
}

// setReadDeadline changes the read deadline unless interrupt has set its
// own, which must stand.
func (c *plainConn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	if !c.interrupted {
		_ = c.nc.SetReadDeadline(t)
	}
	c.mu.Unlock()
}

var aLongTimeAgo = time.Unix(1, 0)

func (c *plainConn) close() { _ = c.nc.Close() }

// roundTrip writes req and reads the answer's header block. On success
// the body, when there is one, returns the connection to the pool at its
// end; on error the caller closes the connection.
func (c *plainConn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, c.interrupt)
	c.nread, c.nwritten, c.werr = 0, 0, nil

	bw := plainWriters.Get().(*bufio.Writer)
	bw.Reset(c)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	plainWriters.Put(bw)

	if err != nil && c.werr == nil {
		// Reading the client's body failed: the request is half sent.
		stop()
		return nil, err
	}
	resp, rerr := c.readResponse(req)
	switch {
	case ctx.Err() != nil:
		stop()
		return nil, ctx.Err()
	case err != nil && rerr != nil:
		// Writing failed, and there is no early answer either.
		stop()
		return nil, err
	case rerr != nil:
		stop()
		return nil, rerr
	}
	reuse := err == nil && !resp.Close && !req.Close
	c.idleLimit = keepAliveLimit(resp.Header, c.pool.idleTimeout)
	reuse = reuse && c.idleLimit > 0
	if resp.Body == http.NoBody {
		c.release(stop, reuse)
		return resp, nil
	}
	resp.Body = &plainBody{rc: resp.Body, c: c, stop: stop, reuse: reuse, ctx: ctx}
	return resp, nil
}

// readResponse reads the header block of the final answer, skipping
// informational ones, within headerTimeout and maxHeader.
func (c *plainConn) readResponse(req *http.Request) (*http.Response, error) {
	if c.pool.headerTimeout > 0 {
		c.setReadDeadline(time.Now().Add(c.pool.headerTimeout))
	}
	for n := 0; ; n++ {
		c.limit = c.pool.maxHeader
		resp, err := http.ReadResponse(c.br, req)
		c.limit = -1
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errUnexpected101
		case resp.StatusCode >= 100 && resp.StatusCode < 200 && n < max1xx:
			continue
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			return nil, errTooMany1xx
		}
		c.setReadDeadline(time.Time{})
		return resp, nil
	}
}

// keepAliveLimit is how long a connection may be reused after an answer
// with header h: three quarters of the timeout in a "Keep-Alive:
// timeout=N" header (Node.js servers send timeout=5 and close idle
// connections after it), so the pool lets go of a connection before the
// upstream closes it under a request; def when there is none or it is
// longer. 0 means not to reuse the connection.
func keepAliveLimit(h http.Header, def time.Duration) time.Duration {
	for _, v := range h["Keep-Alive"] {
		for part := range strings.SplitSeq(v, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "timeout") {
				continue
			}
			secs, err := strconv.Atoi(strings.TrimSpace(val))
			if err != nil || secs < 0 {
				continue
			}
			return min(def, time.Duration(secs)*time.Second*3/4)
		}
	}
	return def
}

// release ends an exchange: the connection goes back to the pool when
// reuse holds and nothing interrupted it, and is closed otherwise.
func (c *plainConn) release(stop func() bool, reuse bool) {
	if stop() && reuse && c.br.Buffered() == 0 {
		c.pool.put(c)
		return
	}
	c.close()
}

// retryable reports whether a request that failed with err on a reused
// connection can be sent again on a new one, by http.Transport's rules:
// when no byte of it was written and its body can be sent again, or when
// the upstream closed the connection without a byte of answer and the
// request is idempotent.
func (c *plainConn) retryable(req *http.Request, err error) bool {
	if req.Context().Err() != nil {
		return false
	}
	rewindable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if c.werr != nil && c.nwritten == 0 {
		return rewindable
	}
	if c.nread > 0 || !rewindable || !idempotent(req) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// plainBody is an answer's body on a plainConn. Its end decides the
// connection's fate: read to EOF, it goes back to the pool; closed early
// or failed, it is closed.
type plainBody struct {
	rc    io.ReadCloser
	c     *plainConn
	ctx   context.Context
	stop  func() bool
	reuse bool
	done  bool
}

func (b *plainBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.done = true
		b.c.release(b.stop, b.reuse)
	case err != nil:
		b.done = true
		b.stop()
		b.c.close()
		if b.ctx.Err() != nil {
			err = b.ctx.Err()
		}
	}
	return n, err
}

func (b *plainBody) Close() error {
	if !b.done {
		b.done = true
		b.stop()
		b.c.close()
	}
	return nil
}
