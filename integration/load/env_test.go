package load

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildCerbai builds the cerbai binary; a build failure fails the test,
// since the load tool is worthless without it.
func buildCerbai(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cerbai")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cerbai/cerbai/cerbai").
		CombinedOutput()
	if err != nil {
		t.Fatalf("go build cerbai: %v\n%s", err, out)
	}
	return bin
}

func startEnv(t *testing.T, cfg EnvConfig) *Env {
	t.Helper()
	if _, err := RaiseOpenFileLimit(); err != nil {
		t.Logf("raise open file limit: %v", err)
	}
	env, err := StartEnv(context.Background(), cfg)
	if err != nil {
		t.Fatalf("StartEnv: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("close env: %v", err)
		}
	})
	return env
}

func TestRunProfile_SmokeThroughCerbai(t *testing.T) {
	env := startEnv(t, EnvConfig{CerbaiBin: buildCerbai(t)})
	target, ok := env.Target("cerbai")
	if !ok || target.Proc == nil {
		t.Fatalf("cerbai target = %+v, %v; want one with a process", target, ok)
	}
	p, _ := LookupProfile("smoke")
	p.Duration = 2 * time.Second
	r, err := RunProfile(context.Background(), target, p, io.Discard)
	if err != nil {
		t.Fatalf("RunProfile: %v", err)
	}
	checkCleanRun(t, r)
	if len(r.RSS) == 0 {
		t.Error("no RSS samples of cerbai, want some")
	}
}

func TestStartEnv_NginxPassesStreamsThrough(t *testing.T) {
	bin := FindNginx()
	if bin == "" {
		t.Skip("nginx is not installed")
	}
	env := startEnv(t, EnvConfig{NginxBin: bin})
	target, ok := env.Target("nginx")
	if !ok || target.Proc == nil || !target.Proc.WithChildren {
		t.Fatalf("nginx target = %+v, %v; want one with its workers", target, ok)
	}
	cfg := SSEConfig{Streams: 4, Events: 3, Interval: time.Millisecond}
	r, err := MeasureSSE(context.Background(), NewClient(4, time.Minute, nil), target, cfg)
	if err != nil {
		t.Fatalf("MeasureSSE: %v", err)
	}
	if r.Streams != 4 || r.Cut != 0 || r.Events != 12 {
		t.Errorf("streams/cut/events = %d/%d/%d (first error %q), want 4/0/12", r.Streams,
			r.Cut, r.Events, r.FirstError)
	}
	if len(target.Proc.pids()) < 2 {
		t.Errorf("nginx pids = %v, want the master and its workers", target.Proc.pids())
	}
}

// TestStartEnv_TLSUpstreamThroughEveryTarget checks -llm-tls: the fake
// serves https, the direct client trusts it with Env.RootCAs, and cerbai
// (and nginx when installed) reach it over verified TLS.
func TestStartEnv_TLSUpstreamThroughEveryTarget(t *testing.T) {
	env := startEnv(t, EnvConfig{CerbaiBin: buildCerbai(t), NginxBin: FindNginx(),
		LLMTLS: true})
	if !strings.HasPrefix(env.LLM.URL, "https://") || env.RootCAs == nil {
		t.Fatalf("fake LLM at %s, roots %v; want https and a CA pool", env.LLM.URL,
			env.RootCAs != nil)
	}
	c := NewClient(4, time.Minute, env.RootCAs)
	cfg := SSEConfig{Streams: 2, Events: 3, Interval: time.Millisecond}
	for _, target := range env.Targets {
		r, err := MeasureSSE(context.Background(), c, target, cfg)
		if err != nil {
			t.Fatalf("%s: MeasureSSE: %v", target.Name, err)
		}
		if r.Streams != 2 || r.Cut != 0 || r.Events != 6 {
			t.Errorf("%s: streams/cut/events = %d/%d/%d (first error %q), want 2/0/6",
				target.Name, r.Streams, r.Cut, r.Events, r.FirstError)
		}
	}
	if len(env.Targets) < 2 {
		t.Errorf("targets %v, want cerbai among them", env.Targets)
	}
}
