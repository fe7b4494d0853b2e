package load

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// maxPerWorker bounds every measuring loop by count as well as by time.
const maxPerWorker = 1_000_000

// ThroughputResult is one phase of small-JSON load.
type ThroughputResult struct {
	Requests int           `json:"requests"`
	Errors   int           `json:"errors"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	RPS      float64       `json:"rps"`
	Latency  Latency       `json:"latency"`
	// CPU is the proxy's user+system time during the phase (0 without a
	// proxy); CPUPer1000 scales it to 1,000 successful requests.
	CPU        time.Duration `json:"cpu_ns"`
	CPUPer1000 time.Duration `json:"cpu_per_1000_ns"`
	FirstError string        `json:"first_error,omitempty"`
}

// MeasureThroughput runs conns workers, each sending small chat requests
// back to back on its own keep-alive connection, for d.
func MeasureThroughput(ctx context.Context, c *http.Client, t Target, conns int,
	d time.Duration) (ThroughputResult, error) {
	cpu0, err := procCPU(t.Proc)
	if err != nil {
		return ThroughputResult{}, err
	}
	type tally struct {
		lat    []time.Duration
		errors int
		first  error
	}
	tallies := make([]tally, conns)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range tallies {
		wg.Go(func() {
			tl := &tallies[w]
			tl.lat = make([]time.Duration, 0, 4096)
			// The deadline is checked between requests, not by cancelling
			// them, so the phase never counts a request it cut itself.
			for i := 0; i < maxPerWorker && time.Now().Before(deadline); i++ {
				t0 := time.Now()
				if err := chat(ctx, c, t.URL); err != nil {
					tl.errors++
					tl.first = cmp.Or(tl.first, err)
					if ctx.Err() != nil {
						return
					}
					continue
				}
				tl.lat = append(tl.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, err := procCPU(t.Proc)
	if err != nil {
		return ThroughputResult{}, err
	}

	r := ThroughputResult{Elapsed: elapsed, CPU: cpu1 - cpu0}
	var all []time.Duration
	for _, tl := range tallies {
		all = append(all, tl.lat...)
		r.Errors += tl.errors
		if tl.first != nil && r.FirstError == "" {
			r.FirstError = tl.first.Error()
		}
	}
	r.Requests = len(all)
	r.Latency = Summarize(all)
	r.RPS = float64(r.Requests) / elapsed.Seconds()
	if r.Requests > 0 {
		r.CPUPer1000 = r.CPU * 1000 / time.Duration(r.Requests)
	}
	return r, ctx.Err()
}

// SSEResult is one phase of streaming load.
type SSEResult struct {
	Streams int `json:"streams"`
	// Cut counts streams that did not end with [DONE], failed ones included.
	Cut        int     `json:"cut"`
	Errors     int     `json:"errors"` // of Cut: no 200 answer or a read error
	Events     int     `json:"events"`
	Delay      Latency `json:"delay"`
	FirstError string  `json:"first_error,omitempty"`
}

// SSEConfig shapes a streaming phase.
type SSEConfig struct {
	Streams  int           // concurrent streams
	Events   int           // events per stream
	Interval time.Duration // between events
	Duration time.Duration // each worker opens streams back to back this long
}

// MeasureSSE runs cfg.Streams workers that each open streams one after the
// other until cfg.Duration has passed, and measures each event's delivery
// delay and each stream's completeness.
func MeasureSSE(ctx context.Context, c *http.Client, t Target, cfg SSEConfig) (SSEResult, error) {
	type tally struct {
		delays               []time.Duration
		streams, cut, errors int
		events               int
		first                error
	}
	tallies := make([]tally, cfg.Streams)
	deadline := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range tallies {
		wg.Go(func() {
			tl := &tallies[w]
			for i := 0; i < maxPerWorker && (i == 0 || time.Now().Before(deadline)); i++ {
				var st StreamStats
				var err error
				tl.delays, st, err = stream(ctx, c, t.URL, cfg.Events, cfg.Interval, tl.delays)
				tl.streams++
				tl.events += st.Events
				if err != nil {
					tl.errors++
					tl.first = cmp.Or(tl.first, err)
				}
				if !st.Done {
					tl.cut++
				}
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()

	var r SSEResult
	var all []time.Duration
	for _, tl := range tallies {
		all = append(all, tl.delays...)
		r.Streams += tl.streams
		r.Cut += tl.cut
		r.Errors += tl.errors
		r.Events += tl.events
		if tl.first != nil && r.FirstError == "" {
			r.FirstError = tl.first.Error()
		}
	}
	r.Delay = Summarize(all)
	return r, ctx.Err()
}

// IdleResult is the memory a proxy spends per open, idle stream.
type IdleResult struct {
	Opened    int   `json:"opened"`
	RSSBefore int64 `json:"rss_before"`
	RSSAfter  int64 `json:"rss_after"`
	PerStream int64 `json:"per_stream"` // bytes
}

// MeasureIdleStreams opens n idle SSE streams through t, each on its own
// connection, waits until each has delivered its first event (so the proxy
// holds both sides), and divides the proxy's RSS growth by n. A target
// without a Proc returns a zero result.
func MeasureIdleStreams(ctx context.Context, t Target, n int) (IdleResult, error) {
	if t.Proc == nil {
		return IdleResult{}, nil
	}
	before, err := t.Proc.RSS()
	if err != nil {
		return IdleResult{}, err
	}
	tr := newTransport(1, nil)  // only proxies, on plain HTTP, have a Proc
	tr.DisableKeepAlives = true // closing a body closes its connection
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel() // also ends every stream still open

	bodies := make([]io.ReadCloser, n)
	defer func() {
		for _, b := range bodies {
			if b != nil {
				b.Close()
			}
		}
	}()
	if err := openIdle(ctx, c, t.URL, bodies); err != nil {
		return IdleResult{}, err
	}
	after, err := t.Proc.RSS()
	if err != nil {
		return IdleResult{}, err
	}
	return IdleResult{Opened: n, RSSBefore: before, RSSAfter: after,
		PerStream: (after - before) / int64(n)}, nil
}

// openIdle fills bodies with open idle streams, 64 being opened at a time
// so the listen backlogs do not overflow.
func openIdle(ctx context.Context, c *http.Client, base string, bodies []io.ReadCloser) error {
	sem := make(chan struct{}, 64)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for i := range bodies {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			body, err := openOneIdle(ctx, c, base)
			if err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
			bodies[i] = body
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("open idle streams: %w", err)
	default:
		return nil
	}
}

func openOneIdle(ctx context.Context, c *http.Client, base string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+PathIdle, nil)
	if err != nil {
		return nil, err
	}
	resp, err := do(c, req)
	if err != nil {
		return nil, err
	}
	// The first event ends with a blank line; read up to it.
	br := bufio.NewReaderSize(resp.Body, 512)
	for range 100 {
		line, err := br.ReadSlice('\n')
		if err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("read first idle event: %w", err)
		}
		if len(line) == 1 {
			return resp.Body, nil
		}
	}
	resp.Body.Close()
	return nil, errors.New("read first idle event: no blank line in 100 lines")
}

// LargeResult is large-body throughput.
type LargeResult struct {
	Bodies  int           `json:"bodies"`
	Bytes   int64         `json:"bytes"`
	Elapsed time.Duration `json:"elapsed_ns"`
	MBps    float64       `json:"mb_per_s"` // 10^6 bytes per second
}

// MeasureLarge downloads bodies of size bytes one after the other until d
// has passed (at least two, at most 64) and reports the rate.
func MeasureLarge(ctx context.Context, c *http.Client, t Target, size int64,
	d time.Duration) (LargeResult, error) {
	buf := make([]byte, 1<<20)
	var r LargeResult
	start := time.Now()
	for r.Bodies < 64 && (r.Bodies < 2 || time.Since(start) < d) {
		n, err := large(ctx, c, t.URL, size, buf)
		r.Bytes += n
		if err != nil {
			return r, err
		}
		r.Bodies++
	}
	r.Elapsed = time.Since(start)
	r.MBps = float64(r.Bytes) / 1e6 / r.Elapsed.Seconds()
	return r, nil
}

func large(ctx context.Context, c *http.Client, base string, size int64,
	buf []byte) (int64, error) {
	url := base + PathLarge + "?bytes=" + strconv.FormatInt(size, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := do(c, req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var n int64
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("read large body: %w", err)
		}
	}
	if n != size {
		return n, fmt.Errorf("read large body: got %d bytes, want %d", n, size)
	}
	return n, nil
}

func procCPU(p *Proc) (time.Duration, error) {
	if p == nil {
		return 0, nil
	}
	return p.CPUTime()
}
