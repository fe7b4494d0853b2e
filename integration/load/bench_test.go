package load

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cerbai/cerbai/integration/golden"
)

// Summaries shaped like issue 5's reference figures.
var (
	sumDirect = Summary{Target: "direct", RPS: 15000, LatP50Ms: 3, LatP99Ms: 12,
		SSEP50Ms: 0.15, SSEP99Ms: 4, SSEStreams: 1500, LargeMBps: 2000}
	sumNginx = Summary{Target: "nginx", Proxy: true, RPS: 10000, LatP50Ms: 6, LatP99Ms: 20,
		CPUMsPer1000: 40, IdleKiB: 17, SSEP50Ms: 0.7, SSEP99Ms: 10, SSEStreams: 1400,
		LargeMBps: 600}
	sumCerbai = Summary{Target: "cerbai", Proxy: true, RPS: 7000, LatP50Ms: 8, LatP99Ms: 25,
		CPUMsPer1000: 95, IdleKiB: 35, SSEP50Ms: 0.8, SSEP99Ms: 15, SSEStreams: 1400,
		LargeMBps: 1000}
)

func TestBenchChecks(t *testing.T) {
	with := func(s Summary, f func(*Summary)) Summary { f(&s); return s }
	tests := []struct {
		name string
		sums []Summary
		want map[string]Status
	}{
		{
			name: "every target met beside nginx",
			sums: []Summary{sumDirect, sumCerbai, sumNginx},
			want: map[string]Status{"small-JSON throughput": Pass, "proxy CPU per request": Pass,
				"SSE unbuffered": Pass, "SSE delay p99": Pass, "streams cut": Pass,
				"memory per idle stream": Pass, "large-body throughput": Pass},
		},
		{
			name: "every target missed beside nginx",
			sums: []Summary{sumDirect, with(sumCerbai, func(s *Summary) {
				s.RPS, s.CPUMsPer1000, s.SSEP50Ms, s.SSEP99Ms = 6000, 101, 1.1, 21
				s.SSECut, s.IdleKiB, s.LargeMBps = 1, 41, 800
			}), sumNginx},
			want: map[string]Status{"small-JSON throughput": Miss, "proxy CPU per request": Miss,
				"SSE unbuffered": Miss, "SSE delay p99": Miss, "streams cut": Miss,
				"memory per idle stream": Miss, "large-body throughput": Miss},
		},
		{
			name: "without nginx: direct and absolute fallbacks",
			sums: []Summary{sumDirect, with(sumCerbai, func(s *Summary) {
				s.RPS, s.CPUMsPer1000 = 7400, 100
			})},
			want: map[string]Status{"small-JSON throughput": Miss, "proxy CPU per request": Pass,
				"SSE unbuffered": Pass, "SSE delay p99": NA, "streams cut": Pass,
				"memory per idle stream": Pass, "large-body throughput": Pass},
		},
		{
			name: "cerbai alone",
			sums: []Summary{sumCerbai},
			want: map[string]Status{"small-JSON throughput": NA, "proxy CPU per request": Pass,
				"SSE unbuffered": Pass, "SSE delay p99": NA, "streams cut": Pass,
				"memory per idle stream": Pass, "large-body throughput": NA},
		},
		{name: "no cerbai, nothing to check", sums: []Summary{sumDirect, sumNginx},
			want: map[string]Status{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]Status{}
			for _, c := range BenchChecks(tt.sums) {
				got[c.Name] = c.Status
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("checks (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSummarize_MediansSumsAndWorstMemory(t *testing.T) {
	round := func(n int, target string, rps float64, cut int, idle int64) RoundResult {
		return RoundResult{Round: n, Target: target,
			Throughput: ThroughputResult{RPS: rps, CPUPer1000: time.Duration(rps) * time.Microsecond,
				Errors: 1},
			SSE:  SSEResult{Streams: 100, Cut: cut},
			Idle: IdleResult{PerStream: idle}}
	}
	rounds := []RoundResult{
		round(1, "cerbai", 300, 1, 40<<10), round(1, "direct", 999, 0, 0),
		round(2, "cerbai", 100, 0, 30<<10),
		round(3, "cerbai", 200, 2, 20<<10),
	}
	got := summarize(Target{Name: "cerbai", Proc: &Proc{}}, rounds)
	want := Summary{Target: "cerbai", Proxy: true, RPS: 200, Errors: 3, CPUMsPer1000: 0.2,
		IdleKiB: 40, SSEStreams: 300, SSECut: 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summarize (-want +got):\n%s", diff)
	}
}

func TestBenchReport_WriteTable(t *testing.T) {
	rep := &BenchReport{Summaries: []Summary{sumDirect, sumCerbai, sumNginx}}
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatalf("WriteTable: %v", err)
	}
	golden.Check(t, filepath.Join("testdata", "table.golden"), b.Bytes())
}

func TestRenderNginxConfig(t *testing.T) {
	got, err := RenderNginxConfig(NginxConfig{Dir: "/tmp/cerbai-load-1/nginx",
		Listen: "127.0.0.1:8001", Upstream: "127.0.0.1:8002", Workers: 2,
		User: "user root root;\n"})
	if err != nil {
		t.Fatalf("RenderNginxConfig: %v", err)
	}
	golden.Check(t, filepath.Join("testdata", "nginx.conf.golden"), []byte(got))
}

func TestRenderNginxConfig_TLSUpstream(t *testing.T) {
	got, err := RenderNginxConfig(NginxConfig{Dir: "/tmp/cerbai-load-1/nginx",
		Listen: "127.0.0.1:8001", Upstream: "127.0.0.1:8002", Workers: 2,
		UpstreamCA: "/tmp/cerbai-load-1/pki/ca.pem"})
	if err != nil {
		t.Fatalf("RenderNginxConfig: %v", err)
	}
	golden.Check(t, filepath.Join("testdata", "nginx-tls.conf.golden"), []byte(got))
}
