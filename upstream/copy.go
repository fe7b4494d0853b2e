package upstream

import (
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Buffer sizes of the copy loop, chosen with the load tool (make bench).
// An event stream spends most of its life waiting, holding its buffer, so
// it gets a small one (an OpenAI chunk is a few hundred bytes; a larger
// event takes two reads). A body with a declared length is bulk and gets a
// buffer by its size: fewer, larger system calls raised 64 MiB throughput
// from about 0.33x of a direct download (32 KiB) to 0.42x (256 KiB) and
// 0.55x (1 MiB) on a 2-core machine. Only bodies over 256 KiB take 1 MiB.
const (
	streamBufSize = 2 << 10
	bulkBufSize   = 32 << 10
	midBufSize    = 256 << 10
	largeBufSize  = 1 << 20
)

// Limitation: a stream holds its 2 KiB buffer while it waits for the next
// event; Go offers no way to wait for a body to become readable without
// reading into something. And each body over 256 KiB being copied holds
// 1 MiB.
var (
	streamBufs = newBufPool(streamBufSize)
	bulkBufs   = newBufPool(bulkBufSize)
	midBufs    = newBufPool(midBufSize)
	largeBufs  = newBufPool(largeBufSize)
)

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
}

// bufPool picks the buffers for a response body: small for streams, large
// only for bodies that need it.
func bufPool(stream bool, contentLength int64) *sync.Pool {
	switch {
	case stream:
		return streamBufs
	case contentLength > midBufSize:
		return largeBufs
	case contentLength > bulkBufSize:
		return midBufs
	default:
		return bulkBufs
	}
}

// copyResponse sends the upstream's status, headers, body and trailers to
// the client.
func (p *Proxy) copyResponse(ex *exchange, resp *http.Response) {
	defer resp.Body.Close()

	// Headers, with the request id for correlation when the upstream
	// sends none of its own, and the trailers announced.
	h := ex.w.Header()
	copyResponseHeaders(h, resp.Header)
	if _, ok := h[hdrRequestID]; !ok {
		h[hdrRequestID] = ex.hdrVals[0:1:1]
	}
	announceTrailers(h, resp.Trailer)
	ex.status = resp.StatusCode
	ex.w.WriteHeader(resp.StatusCode)

	// A stream is flushed after every write, and its headers at once: the
	// first event may be a while coming.
	var fl flusher
	if isEventStream(resp.Header) || resp.ContentLength < 0 {
		fl = http.NewResponseController(ex.w)
		_ = fl.Flush()
	}
	if p.idle > 0 {
		ex.idle = time.AfterFunc(p.idle, ex.cancel)
	}
	p.stats.activeStreams.Add(1)
	defer p.stats.activeStreams.Add(-1) // after the outcome is counted
	pool := bufPool(fl != nil, resp.ContentLength)
	n, upstreamSide, err := copyBody(ex.w, resp.Body, pool, fl, ex.idle, p.idle)
	ex.bytesOut = n

	switch {
	case err == nil:
		copyTrailers(h, resp.Trailer)
	case !upstreamSide || ex.r.Context().Err() != nil:
		// Also when the read failed: the client leaving cancels it.
		p.debug(ex, "client went away during the response", err)
	default:
		kind := ErrKindReset
		if ex.idleTimedOut() {
			kind = ErrKindIdleTimeout
		}
		p.stats.upstreamError(kind)
		p.warn(ex, "upstream body ended early", err, slog.String("kind", kind))
		// The client must see the cut: ending the response normally would
		// make a truncated body look complete. The server closes the
		// connection (HTTP/1) or resets the stream (HTTP/2) and logs
		// nothing for this panic.
		panic(http.ErrAbortHandler)
	}
}

type flusher interface{ Flush() error }

// copyBody copies src to w until src ends (err nil) or either side fails;
// upstream reports whether the failure was reading src. Its buffer comes
// from pool. fl, when not nil,
// is flushed after each write. idle, when not nil, is reset to d after
// each read that delivered something. The first error ends the copy and
// is what the caller sees.
func copyBody(w io.Writer, src io.Reader, pool *sync.Pool, fl flusher, idle *time.Timer,
	d time.Duration) (written int64, upstream bool, err error) {
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if idle != nil {
				idle.Reset(d)
			}
			wn, werr := w.Write(buf[:n])
			written += int64(wn)
			if werr != nil {
				return written, false, werr
			}
			if fl != nil {
				if ferr := fl.Flush(); ferr != nil {
					return written, false, ferr
				}
			}
		}
		switch {
		case rerr == io.EOF:
			return written, false, nil
		case rerr != nil:
			return written, true, rerr
		}
	}
}

func isEventStream(h http.Header) bool {
	return hasPrefixFold(strings.TrimSpace(h.Get("Content-Type")), "text/event-stream")
}

// announceTrailers lists the upstream's announced trailers in the Trailer
// header, so the server sends them after the body.
func announceTrailers(h, trailer http.Header) {
	for k := range trailer {
		if !isHopByHop(k) {
			h.Add("Trailer", k)
		}
	}
}

// copyTrailers sets the trailer values after the body. Ones that were not
// announced use http.TrailerPrefix.
func copyTrailers(h, trailer http.Header) {
	announced := h["Trailer"]
	for k, vv := range trailer {
		switch {
		case isHopByHop(k):
		case slices.Contains(announced, k):
			h[k] = vv
		default:
			h[http.TrailerPrefix+k] = vv
		}
	}
}
