package load

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// BenchConfig shapes a side-by-side benchmark.
type BenchConfig struct {
	Rounds      int           `json:"rounds"`       // each target measured this often
	Conns       int           `json:"conns"`        // keep-alive connections for small JSON
	Phase       time.Duration `json:"phase_ns"`     // length of each timed phase
	IdleStreams int           `json:"idle_streams"` // streams held open for memory
	SSE         SSEConfig     `json:"sse"`          // its Duration is set to Phase
	LargeBytes  int64         `json:"large_bytes"`  // size of one large body
	// LLMTLS records that the fake LLM served TLS (EnvConfig.LLMTLS).
	LLMTLS bool `json:"llm_tls"`
	// RootCAs trusts the fake LLM's certificate when it serves TLS.
	RootCAs *x509.CertPool `json:"-"`
}

// DefaultBenchConfig returns issue 5's method: 64 connections, 2,000 idle
// streams, 100 streams of 20 events 10 ms apart, 64 MiB bodies, 3 rounds
// of 3-second phases.
func DefaultBenchConfig() BenchConfig {
	return BenchConfig{
		Rounds:      3,
		Conns:       64,
		Phase:       3 * time.Second,
		IdleStreams: 2000,
		SSE:         SSEConfig{Streams: 100, Events: 20, Interval: 10 * time.Millisecond},
		LargeBytes:  64 << 20,
	}
}

// RoundResult is one target's measurements in one round.
type RoundResult struct {
	Round      int              `json:"round"`
	Target     string           `json:"target"`
	Idle       IdleResult       `json:"idle"`
	Throughput ThroughputResult `json:"throughput"`
	SSE        SSEResult        `json:"sse"`
	Large      LargeResult      `json:"large"`
}

// Summary condenses one target's rounds: the median of each rate and
// latency, the sum of counts, and the largest memory figure (Go returns
// memory to the OS lazily, so later rounds can understate it).
type Summary struct {
	Target       string  `json:"target"`
	Proxy        bool    `json:"proxy"` // CPU and memory were measured
	RPS          float64 `json:"rps"`
	LatP50Ms     float64 `json:"latency_p50_ms"`
	LatP99Ms     float64 `json:"latency_p99_ms"`
	Errors       int     `json:"errors"` // failed small-JSON requests
	CPUMsPer1000 float64 `json:"cpu_ms_per_1000,omitempty"`
	IdleKiB      float64 `json:"idle_kib_per_stream,omitempty"`
	SSEP50Ms     float64 `json:"sse_delay_p50_ms"`
	SSEP99Ms     float64 `json:"sse_delay_p99_ms"`
	SSEStreams   int     `json:"sse_streams"`
	SSECut       int     `json:"sse_cut"`
	LargeMBps    float64 `json:"large_mb_per_s"`
}

// BenchReport is everything one benchmark run produced; it is written as
// JSON so runs can be compared.
type BenchReport struct {
	Started    time.Time     `json:"started"`
	GoVersion  string        `json:"go_version"`
	NumCPU     int           `json:"num_cpu"`
	ClockTicks int           `json:"clock_ticks_per_s"`
	LoadAvg    string        `json:"loadavg_at_start"` // 1, 5, 15 minutes
	Config     BenchConfig   `json:"config"`
	Rounds     []RoundResult `json:"rounds"`
	Summaries  []Summary     `json:"summaries"`
	Checks     []Check       `json:"checks"`
}

// RunBench measures every target, phase by phase and round by round,
// alternating targets (and rotating who goes first) so slow drifts of the
// machine spread over all of them. Progress lines go to progress.
//
// Limitation: the load generator and the fake LLM run in this process, on
// the same cores as the proxy, so every figure is bounded by the share of
// CPU they leave; on a busy machine (see LoadAvg) runs differ widely.
func RunBench(ctx context.Context, targets []Target, cfg BenchConfig,
	progress io.Writer) (*BenchReport, error) {
	cfg.SSE.Duration = cfg.Phase
	rep := &BenchReport{Started: time.Now().UTC(), GoVersion: runtime.Version(),
		NumCPU: runtime.NumCPU(), ClockTicks: ClockTicksPerSecond, Config: cfg,
		LoadAvg: loadAvg()}
	c := NewClient(max(cfg.Conns, cfg.SSE.Streams), time.Minute, cfg.RootCAs)
	defer c.CloseIdleConnections()

	// Warm up: connections, the proxy's token and its pools.
	for _, t := range targets {
		if _, err := MeasureThroughput(ctx, c, t, cfg.Conns, cfg.Phase/4); err != nil {
			return nil, fmt.Errorf("warm up %s: %w", t.Name, err)
		}
	}
	for round := range cfg.Rounds {
		order := slices.Concat(targets[round%len(targets):], targets[:round%len(targets)])
		res := make(map[string]*RoundResult, len(order))
		for _, t := range order {
			res[t.Name] = &RoundResult{Round: round + 1, Target: t.Name}
		}
		for _, ph := range benchPhases {
			for _, t := range order {
				line, err := ph.run(ctx, c, t, cfg, res[t.Name])
				if err != nil {
					return nil, fmt.Errorf("measure %s of %s: %w", ph.name, t.Name, err)
				}
				fmt.Fprintf(progress, "round %d/%d %-7s %-12s %s\n", round+1, cfg.Rounds,
					t.Name, ph.name, line)
			}
		}
		for _, t := range targets {
			rep.Rounds = append(rep.Rounds, *res[t.Name])
		}
	}
	for _, t := range targets {
		rep.Summaries = append(rep.Summaries, summarize(t, rep.Rounds))
	}
	rep.Checks = BenchChecks(rep.Summaries)
	return rep, nil
}

// benchPhases run in this order each round. Idle streams come first, while
// the proxy's heap is closest to its resting size.
var benchPhases = []struct {
	name string
	run  func(context.Context, *http.Client, Target, BenchConfig, *RoundResult) (string, error)
}{
	{"idle streams", func(ctx context.Context, _ *http.Client, t Target, cfg BenchConfig,
		rr *RoundResult) (string, error) {
		r, err := MeasureIdleStreams(ctx, t, cfg.IdleStreams)
		rr.Idle = r
		return fmt.Sprintf("%.1f KiB per stream", float64(r.PerStream)/1024), err
	}},
	{"small JSON", func(ctx context.Context, c *http.Client, t Target, cfg BenchConfig,
		rr *RoundResult) (string, error) {
		r, err := MeasureThroughput(ctx, c, t, cfg.Conns, cfg.Phase)
		rr.Throughput = r
		return fmt.Sprintf("%.0f req/s, %d errors, CPU %.0f ms per 1,000", r.RPS, r.Errors,
			ms(r.CPUPer1000)), err
	}},
	{"SSE", func(ctx context.Context, c *http.Client, t Target, cfg BenchConfig,
		rr *RoundResult) (string, error) {
		r, err := MeasureSSE(ctx, c, t, cfg.SSE)
		rr.SSE = r
		return fmt.Sprintf("delay p50 %.2f ms p99 %.2f ms, %d of %d cut", ms(r.Delay.P50),
			ms(r.Delay.P99), r.Cut, r.Streams), err
	}},
	{"large bodies", func(ctx context.Context, c *http.Client, t Target, cfg BenchConfig,
		rr *RoundResult) (string, error) {
		r, err := MeasureLarge(ctx, c, t, cfg.LargeBytes, cfg.Phase/2)
		rr.Large = r
		return fmt.Sprintf("%.0f MB/s", r.MBps), err
	}},
}

// loadAvg returns /proc/loadavg's first three fields: a busy machine makes
// a run's numbers noisy, and the report should say so.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func summarize(t Target, rounds []RoundResult) Summary {
	s := Summary{Target: t.Name, Proxy: t.Proc != nil}
	var rps, p50, p99, cpu, sse50, sse99, mbps []float64
	for _, r := range rounds {
		if r.Target != t.Name {
			continue
		}
		rps = append(rps, r.Throughput.RPS)
		p50 = append(p50, ms(r.Throughput.Latency.P50))
		p99 = append(p99, ms(r.Throughput.Latency.P99))
		cpu = append(cpu, ms(r.Throughput.CPUPer1000))
		sse50 = append(sse50, ms(r.SSE.Delay.P50))
		sse99 = append(sse99, ms(r.SSE.Delay.P99))
		mbps = append(mbps, r.Large.MBps)
		s.Errors += r.Throughput.Errors
		s.SSEStreams += r.SSE.Streams
		s.SSECut += r.SSE.Cut
		s.IdleKiB = max(s.IdleKiB, float64(r.Idle.PerStream)/1024)
	}
	s.RPS, s.LatP50Ms, s.LatP99Ms = median(rps), median(p50), median(p99)
	s.SSEP50Ms, s.SSEP99Ms, s.LargeMBps = median(sse50), median(sse99), median(mbps)
	if s.Proxy {
		s.CPUMsPer1000 = median(cpu)
	}
	return s
}

// BenchChecks evaluates issue 5's targets for the "cerbai" summary against
// the "nginx" and "direct" ones, falling back to the absolute targets the
// issue gives for runs without nginx. Without a cerbai summary there is
// nothing to check.
func BenchChecks(sums []Summary) []Check {
	c, ok := find(sums, "cerbai")
	if !ok {
		return nil
	}
	ng, hasNginx := find(sums, "nginx")
	d, hasDirect := find(sums, "direct")
	var out []Check

	// Throughput and CPU: relative to nginx when it ran.
	switch {
	case hasNginx:
		out = append(out, check("small-JSON throughput", c.RPS >= 0.65*ng.RPS,
			"≥ 0.65× nginx", ratio(c.RPS, ng.RPS)))
	case hasDirect:
		out = append(out, check("small-JSON throughput", c.RPS >= 0.5*d.RPS,
			"≥ 0.5× direct (no nginx)", ratio(c.RPS, d.RPS)))
	default:
		out = append(out, notApplicable("small-JSON throughput", "≥ 0.65× nginx", "no baseline"))
	}
	if hasNginx {
		out = append(out, check("proxy CPU per request", c.CPUMsPer1000 <= 2.5*ng.CPUMsPer1000,
			"≤ 2.5× nginx", ratio(c.CPUMsPer1000, ng.CPUMsPer1000)))
	} else {
		out = append(out, check("proxy CPU per request", c.CPUMsPer1000 <= 100,
			"≤ 100 ms per 1,000 (no nginx)", num(c.CPUMsPer1000)+" ms"))
	}

	// Streams.
	out = append(out, check("SSE unbuffered", c.SSEP50Ms <= 1, "delay p50 ≤ 1 ms",
		num(c.SSEP50Ms)+" ms"))
	if hasNginx {
		out = append(out, check("SSE delay p99", c.SSEP99Ms <= 2*ng.SSEP99Ms, "≤ 2× nginx",
			ratio(c.SSEP99Ms, ng.SSEP99Ms)))
	} else {
		out = append(out, notApplicable("SSE delay p99", "≤ 2× nginx", "nginx not run"))
	}
	out = append(out, check("streams cut", c.SSECut == 0, "0",
		strconv.Itoa(c.SSECut)+" of "+strconv.Itoa(c.SSEStreams)))
	out = append(out, check("memory per idle stream", c.IdleKiB <= 40, "≤ 40 KiB",
		num(c.IdleKiB)+" KiB"))

	// Bulk bodies.
	if hasDirect {
		out = append(out, check("large-body throughput", c.LargeMBps >= 0.45*d.LargeMBps,
			"≥ 0.45× direct", ratio(c.LargeMBps, d.LargeMBps)))
	} else {
		out = append(out, notApplicable("large-body throughput", "≥ 0.45× direct",
			"direct not run"))
	}
	return out
}

func find(sums []Summary, name string) (Summary, bool) {
	for _, s := range sums {
		if s.Target == name {
			return s, true
		}
	}
	return Summary{}, false
}

// WriteTable prints one column per target and, when the targets ran, the
// cerbai/nginx and cerbai/direct ratios.
func (r *BenchReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-30s\t", "")
	for _, s := range r.Summaries {
		fmt.Fprintf(tw, "%s\t", s.Target)
	}
	c, hasC := find(r.Summaries, "cerbai")
	ng, hasN := find(r.Summaries, "nginx")
	d, hasD := find(r.Summaries, "direct")
	type ratioCol struct {
		name string
		base Summary
	}
	var ratios []ratioCol
	if hasC && hasN {
		ratios = append(ratios, ratioCol{"cerbai/nginx", ng})
	}
	if hasC && hasD {
		ratios = append(ratios, ratioCol{"cerbai/direct", d})
	}
	for _, rt := range ratios {
		fmt.Fprintf(tw, "%s\t", rt.name)
	}
	fmt.Fprintln(tw)
	for _, row := range tableRows {
		fmt.Fprintf(tw, "%-30s\t", row.name) // padded: the labels read better left-aligned
		for _, s := range r.Summaries {
			fmt.Fprintf(tw, "%s\t", row.cell(s))
		}
		for _, rt := range ratios {
			fmt.Fprintf(tw, "%s\t", cellRatio(row, c, rt.base))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

type tableRow struct {
	name  string
	value func(Summary) float64 // NaN: not measured
	cell  func(Summary) string
}

var tableRows = []tableRow{
	row("requests/s (64 conns)", func(s Summary) float64 { return s.RPS }, "%.0f"),
	row("latency p50 (ms)", func(s Summary) float64 { return s.LatP50Ms }, "%.2f"),
	row("latency p99 (ms)", func(s Summary) float64 { return s.LatP99Ms }, "%.2f"),
	row("proxy CPU per 1,000 req (ms)", proxyOnly(func(s Summary) float64 {
		return s.CPUMsPer1000
	}), "%.0f"),
	row("memory per idle stream (KiB)", proxyOnly(func(s Summary) float64 {
		return s.IdleKiB
	}), "%.1f"),
	row("SSE delay p50 (ms)", func(s Summary) float64 { return s.SSEP50Ms }, "%.2f"),
	row("SSE delay p99 (ms)", func(s Summary) float64 { return s.SSEP99Ms }, "%.2f"),
	{name: "SSE streams cut", value: func(s Summary) float64 { return math.NaN() },
		cell: func(s Summary) string {
			return strconv.Itoa(s.SSECut) + " of " + strconv.Itoa(s.SSEStreams)
		}},
	row("large-body throughput (MB/s)", func(s Summary) float64 { return s.LargeMBps }, "%.0f"),
}

func row(name string, value func(Summary) float64, format string) tableRow {
	return tableRow{name: name, value: value, cell: func(s Summary) string {
		v := value(s)
		if math.IsNaN(v) {
			return "—"
		}
		return fmt.Sprintf(format, v)
	}}
}

func proxyOnly(f func(Summary) float64) func(Summary) float64 {
	return func(s Summary) float64 {
		if !s.Proxy {
			return math.NaN()
		}
		return f(s)
	}
}

func cellRatio(r tableRow, s, base Summary) string {
	a, b := r.value(s), r.value(base)
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func ratio(a, b float64) string {
	if b == 0 {
		return "no baseline"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
