package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// exchange is the state of one request. It is one allocation: the URL,
// the replay body reader and the backing of cerbai's own header values
// live inside it.
type exchange struct {
	w         http.ResponseWriter
	r         *http.Request
	start     time.Time
	ctx       context.Context // the upstream request's; r's unless idle-timed
	cancel    context.CancelFunc
	reqID     string
	key       string
	rawPath   string // as received
	query     string // as received
	targetErr error
	status    int // the status the client was sent; 499 when it left first
	bytesOut  int64
	slot      bool // holds a MaxConcurrent slot

	body       bodyReader
	replay     []byte // the whole body when replayable
	replayable bool
	outLen     int64        // outbound Content-Length, -1 unknown
	stream     io.Reader    // the body when not replayable
	rbody      bytes.Reader // the first send's body over the replay buffer

	url     url.URL
	ob      outboundHeaders
	hdrVals [2]string // backing for the request id and X-Forwarded-For values

	idle *time.Timer // ends the upstream body after StreamIdleTimeout of silence
}

// statusClientGone is counted when the client left before an answer
// (nginx's convention).
const statusClientGone = 499

func (p *Proxy) newExchange(w http.ResponseWriter, r *http.Request) *exchange {
	ex := &exchange{w: w, r: r, start: time.Now(), ctx: r.Context()}
	ex.rawPath, ex.query, ex.targetErr = splitTarget(requestTarget(r))
	if r.Method == http.MethodConnect && ex.targetErr != nil {
		ex.targetErr = CheckTarget(r) // authority-form is CONNECT's own
	}
	if id := r.Header.Get(hdrRequestID); validRequestID(id) {
		ex.reqID = id
	} else {
		ex.reqID = newRequestID()
	}
	return ex
}

// fail answers with cerbai's error body and returns false, for admit.
func (ex *exchange) fail(status int, code, msg string) bool {
	ex.status = status
	RefuseBody(ex.w, ex.r)
	WriteError(ex.w, status, code, msg)
	return false
}

// RefuseBody prepares an answer to a request whose body will not be read:
// the connection closes after the answer, and the server does not wait
// for the body first. Without it Go's server reads up to 256 KiB of the
// unread body before answering, with no deadline, so a client without a
// key could hold a connection by declaring a body and never sending it.
func RefuseBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || r.ContentLength == 0 {
		return
	}
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// CloseIfAmbiguous closes an HTTP/1 connection after the answer when the
// request's framing could be read differently by a proxy in front:
// Go's server lets Transfer-Encoding win over a Content-Length in the same
// request and drops the Content-Length before a handler sees it, so any
// chunked request closes its connection, and so does HTTP/1.0 (whose
// Transfer-Encoding Go ignores, framing by Content-Length, where RFC 9112
// §6.1 says to close).
func CloseIfAmbiguous(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && (len(r.TransferEncoding) > 0 || r.ProtoMinor == 0) {
		w.Header().Set("Connection", "close")
	}
}

// idleTimedOut reports whether the idle timer ended the upstream request:
// only the timer cancels ex.ctx while the client is still there.
func (ex *exchange) idleTimedOut() bool {
	return ex.cancel != nil && ex.ctx.Err() != nil && ex.r.Context().Err() == nil
}

// stop releases what the exchange holds beyond the handler.
func (ex *exchange) stop() {
	if ex.idle != nil {
		ex.idle.Stop()
	}
	if ex.cancel != nil {
		ex.cancel()
	}
}

// forward sends the request upstream, once more after a purge status when
// the body allows it, and copies the answer back.
func (p *Proxy) forward(ex *exchange) {
	if !p.prepareBody(ex) {
		return
	}
	if p.idle > 0 {
		// A context of our own lets the idle timer end the upstream body.
		ex.ctx, ex.cancel = context.WithCancel(ex.r.Context())
	}
	p.buildURL(ex)

	tok, err := p.tokens.Token(ex.ctx)
	if err != nil {
		p.tokenUnavailable(ex, err)
		return
	}
	hdr := make(http.Header, len(ex.r.Header)+3)
	rewriteHeaders(hdr, ex.r.Header, p.outbound(ex, tok))
	resp, err := p.send(ex, hdr, ex.firstBody())
	if err != nil {
		p.sendFailed(ex, err)
		return
	}

	// The upstream rejected the token: drop it, and send once more with a
	// new one when the body can be sent again. The client sees only the
	// second answer. A second rejection is passed on without another
	// purge: a fresh token refused too points at the configuration, and
	// purging again would make every request fetch a token.
	if p.purges(resp.StatusCode) {
		p.tokens.Invalidate(tok)
		p.warn(ex, "upstream rejected token", nil,
			slog.Int("status", resp.StatusCode), slog.Bool("replay", ex.replayable))
		if ex.replayable {
			if resp, err = p.replay(ex, hdr, resp); err != nil {
				return // answered by replay
			}
		}
	}
	p.copyResponse(ex, resp)
}

// replay discards a rejected answer and sends the request again with a
// fresh token. On error the client has been answered.
func (p *Proxy) replay(ex *exchange, hdr http.Header, rejected *http.Response) (
	*http.Response, error) {
	drain(rejected.Body)
	tok, err := p.tokens.Token(ex.ctx)
	if err != nil {
		p.tokenUnavailable(ex, err)
		return nil, err
	}
	// The first request may still be in the transport's hands: it gets a
	// header map of its own.
	hdr = hdr.Clone()
	hdr[p.tokenHeader] = p.tokenHeaderValue(tok)
	var body io.ReadCloser
	if ex.replay != nil {
		body, _ = ex.getBody() // the request's GetBody
	}
	p.stats.retries.Add(1)
	resp, err := p.send(ex, hdr, body)
	if err != nil {
		p.sendFailed(ex, err)
		return nil, err
	}
	return resp, nil
}

// drain reads a little of a discarded body, so its connection can be
// reused, and closes it.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}

func (p *Proxy) purges(status int) bool {
	return slices.Contains(p.purge, status)
}

// blankRequest is copied by WithContext: the only way to set a request's
// context, and a single allocation.
var blankRequest http.Request

// send builds the outbound request and round-trips it.
func (p *Proxy) send(ex *exchange, hdr http.Header, body io.ReadCloser) (
	*http.Response, error) {
	out := blankRequest.WithContext(ex.ctx)
	out.Method = ex.r.Method
	out.URL = &ex.url
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	out.Header = hdr
	out.Host = p.host
	if body != nil {
		out.Body = body
		out.ContentLength = ex.outLen
	}
	if ex.replayable && ex.replay != nil {
		out.GetBody = ex.getBody // lets the transport retry a dead keep-alive
	}
	return p.transport.RoundTrip(out)
}

func (ex *exchange) getBody() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(ex.replay)), nil
}

// firstBody is the body of the first send: nil without one.
func (ex *exchange) firstBody() io.ReadCloser {
	switch {
	case ex.replay != nil:
		// io.NopCloser over a *bytes.Reader is a body net/http knows to be
		// in memory, so it writes headers and body in one system call;
		// any other type has its headers flushed first, costing a write.
		ex.rbody.Reset(ex.replay)
		return io.NopCloser(&ex.rbody)
	case ex.stream == io.Reader(&ex.body):
		return &ex.body
	case ex.stream != nil:
		return readCloser{ex.stream, &ex.body}
	}
	return nil
}

// buildURL joins the target with the path and query as received. The
// escaped path is kept exactly when it holds escapes (RawPath);
// Limitation: a path character RFC 3986 does not allow raw (such as "{")
// is percent-encoded by Go's client on the way out.
func (p *Proxy) buildURL(ex *exchange) {
	u := &ex.url
	u.Scheme, u.Host = p.scheme, p.host
	if !p.baseEscaped && strings.IndexByte(ex.rawPath, '%') < 0 {
		u.Path = p.baseRawPath + ex.rawPath
	} else {
		u.Path = p.basePath + ex.r.URL.Path
		u.RawPath = p.baseRawPath + ex.rawPath
	}
	switch {
	case p.baseQuery == "":
		u.RawQuery = ex.query
	case ex.query == "":
		u.RawQuery = p.baseQuery
	default:
		u.RawQuery = p.baseQuery + "&" + ex.query
	}
}

// outbound collects the values rewriteHeaders sets.
func (p *Proxy) outbound(ex *exchange, tok string) *outboundHeaders {
	ex.hdrVals[0] = ex.reqID
	o := &ex.ob
	*o = outboundHeaders{
		tokenHeader: p.tokenHeader,
		tokenValue:  p.tokenHeaderValue(tok),
		requestID:   ex.hdrVals[0:1:1],
	}
	if p.forwardNone {
		return o
	}
	host, _, err := net.SplitHostPort(ex.r.RemoteAddr)
	if err != nil {
		return o // not a network peer (in-process request): nothing to say
	}
	o.keepForward = p.trustedPeer(host)
	prior := ex.r.Header[hdrForwardedFor]
	if o.keepForward && len(prior) > 0 {
		o.forwardedFor = []string{strings.Join(prior, ", ") + ", " + host}
		return o
	}
	ex.hdrVals[1] = host
	o.forwardedFor = ex.hdrVals[1:2:2]
	return o
}

func (p *Proxy) trustedPeer(host string) bool {
	if len(p.trusted) == 0 {
		return false
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	for _, pr := range p.trusted {
		if pr.Contains(addr) {
			return true
		}
	}
	return false
}

// tokenHeaderValue returns prefix+token as a header value, cached for
// the current token. The slice is shared by concurrent requests and
// never modified.
func (p *Proxy) tokenHeaderValue(tok string) []string {
	if tv := p.tokenVal.Load(); tv != nil && tv.token == tok {
		return tv.value
	}
	tv := &tokenValue{token: tok, value: []string{p.tokenPrefix + tok}}
	p.tokenVal.Store(tv)
	return tv.value
}

// prepareBody reads the body first when it is small enough to replay and
// sets up the rest to stream. False when the client has been answered.
func (p *Proxy) prepareBody(ex *exchange) bool {
	r := ex.r
	ex.body = bodyReader{rc: r.Body, limit: p.maxBody}
	ex.outLen = r.ContentLength
	cl := r.ContentLength
	if p.maxBody > 0 && cl > p.maxBody {
		return p.bodyFailed(ex, errBodyTooLarge)
	}
	var err error
	switch {
	case cl == 0 || r.Body == nil || r.Body == http.NoBody:
		ex.replayable, ex.outLen = true, 0
	case p.replayMax > 0 && cl > 0 && cl <= p.replayMax:
		ex.replay = make([]byte, cl)
		_, err = io.ReadFull(&ex.body, ex.replay)
		ex.replayable = true
	case p.replayMax > 0 && cl < 0:
		// Unknown length: read one byte past the replay bound to learn
		// whether it all fits.
		var complete bool
		ex.replay, complete, err = readPrefix(&ex.body, p.replayMax)
		if complete {
			ex.replayable, ex.outLen = true, int64(len(ex.replay))
		} else if err == nil {
			ex.stream = io.MultiReader(bytes.NewReader(ex.replay), &ex.body)
			ex.replay = nil
		}
	default:
		ex.stream = &ex.body
	}
	if ex.replayable && len(ex.replay) == 0 {
		ex.replay, ex.outLen = nil, 0
	}
	if err != nil {
		return p.bodyFailed(ex, err)
	}
	return true
}

// readPrefix reads up to max+1 bytes; complete reports that the body
// ended within max.
func readPrefix(r io.Reader, max int64) (buf []byte, complete bool, err error) {
	limit := max + 1
	buf = make([]byte, 0, min(limit, 4<<10))
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(int64(cap(buf)), limit-int64(len(buf)))))
		}
		n, err := r.Read(buf[len(buf):int(min(int64(cap(buf)), limit))])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	return buf, false, nil
}

// bodyFailed answers a request whose body could not be read or sent.
func (p *Proxy) bodyFailed(ex *exchange, err error) bool {
	switch {
	case ex.body.tooLarge.Load() || errors.Is(err, errBodyTooLarge):
		// The rest of the body is unread: close rather than let the server
		// try to skip it.
		ex.w.Header().Set("Connection", "close")
		return ex.fail(http.StatusRequestEntityTooLarge, CodeRequestTooLarge,
			"request body too large")
	case ex.body.timedOut.Load():
		// The server's read deadline (--request-read-timeout) passed. Its
		// read error also ended the request's context, but the client is
		// still there to be told.
		ex.w.Header().Set("Connection", "close")
		return ex.fail(http.StatusRequestTimeout, CodeRequestTimeout,
			"the request body was not received in time")
	case ex.r.Context().Err() != nil:
		ex.status = statusClientGone
		return false
	}
	p.debug(ex, "request body unreadable", err)
	ex.w.Header().Set("Connection", "close")
	return ex.fail(http.StatusBadRequest, CodeInvalidRequest,
		"the request body could not be read")
}

// tokenUnavailable answers 503 when no token can be had.
func (p *Proxy) tokenUnavailable(ex *exchange, err error) {
	if ex.r.Context().Err() != nil {
		ex.status = statusClientGone
		return
	}
	p.stats.upstreamError(ErrKindTokenUnavailable)
	p.warn(ex, "no token for request", err)
	ex.fail(http.StatusServiceUnavailable, CodeTokenUnavailable,
		"no access token is available; try again later")
}

// sendFailed answers a request the transport could not complete.
func (p *Proxy) sendFailed(ex *exchange, err error) {
	switch {
	case ex.body.tooLarge.Load():
		p.bodyFailed(ex, errBodyTooLarge)
		return
	case ex.body.timedOut.Load():
		p.bodyFailed(ex, err)
		return
	case ex.r.Context().Err() != nil:
		ex.status = statusClientGone
		p.debug(ex, "client left before the answer", err)
		return
	case ex.body.clientErr.Load():
		p.bodyFailed(ex, err)
		return
	}
	f := classify(err)
	p.stats.upstreamError(f.kind)
	p.warn(ex, "upstream request failed", err, slog.String("kind", f.kind))
	ex.fail(f.status, f.code, f.msg)
}

func (p *Proxy) debug(ex *exchange, msg string, err error) {
	ctx := ex.r.Context()
	if p.log.Enabled(ctx, slog.LevelDebug) {
		p.log.LogAttrs(ctx, slog.LevelDebug, msg,
			slog.String("request_id", ex.reqID), slog.String("error", errString(err)))
	}
}

var errBodyTooLarge = errors.New("read request body: too large")

// bodyReader counts and limits the client's body. The transport reads it
// on its own goroutine, hence the atomics.
type bodyReader struct {
	rc        io.ReadCloser
	limit     int64 // 0: none
	n         atomic.Int64
	tooLarge  atomic.Bool
	clientErr atomic.Bool // reading from the client failed
	timedOut  atomic.Bool // the server's read deadline ended it
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.tooLarge.Load() {
		return 0, errBodyTooLarge
	}
	if b.limit > 0 {
		// Ask for one byte past the limit at most, to see it passed.
		if left := b.limit - b.n.Load() + 1; int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := b.rc.Read(p)
	total := b.n.Add(int64(n))
	if b.limit > 0 && total > b.limit {
		b.tooLarge.Store(true)
		return n - int(total-b.limit), errBodyTooLarge
	}
	if err != nil && err != io.EOF {
		b.clientErr.Store(true)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			b.timedOut.Store(true)
		}
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

type readCloser struct {
	io.Reader
	io.Closer
}
