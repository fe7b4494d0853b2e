package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cerbai/cerbai/integration/load"
)

func TestRun_UsageErrorsExitTwo(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantOut string
	}{
		{"no mode", nil, "usage:"},
		{"unknown mode", []string{"spike"}, `unknown mode "spike"`},
		{"unknown profile", []string{"profile", "-name", "spike"}, `unknown name "spike"`},
		{"bad flag", []string{"bench", "-rounds=x"}, "invalid value"},
		{"zero rounds", []string{"bench", "-rounds", "0", "-cerbai", ""}, "-rounds"},
		{"negative clients", []string{"profile", "-name", "smoke", "-clients", "-1"},
			"-clients"},
		{"missing cerbai binary", []string{"profile", "-name", "smoke", "-cerbai",
			"/nonexistent/cerbai"}, "go build -o bin/cerbai ./cerbai"},
		{"unknown target", []string{"profile", "-name", "smoke", "-target", "envoy"},
			`-target "envoy"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit status %d, want 2 (stderr %q)", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantOut) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.wantOut)
			}
		})
	}
}

func TestRun_HelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"bench", "-h"}, {"profile", "-h"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Errorf("run %v: exit status %d, want 0", args, code)
		}
	}
}

func TestRun_ProfileDirectWritesResults(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sub", "smoke.json")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"profile", "-name", "smoke", "-target", "direct",
		"-duration", "300ms", "-out", out}, &stdout, &stderr)
	if code == 2 {
		t.Fatalf("exit status 2, want a run (stderr %q)", stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("read results: %v", err)
	}
	var r load.ProfileResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("decode results: %v", err)
	}
	if r.Profile != "smoke" || r.Target != "direct" || r.Requests == 0 || r.Errors != 0 {
		t.Errorf("results = %s/%s, %d requests, %d errors; want smoke/direct, >0, 0",
			r.Profile, r.Target, r.Requests, r.Errors)
	}
	// The exit status follows the checks (latency is the machine's business).
	if wantCode := map[bool]int{true: 0, false: 1}[r.Passed()]; code != wantCode {
		t.Errorf("exit status %d, want %d for checks %+v", code, wantCode, r.Checks)
	}
	if !strings.Contains(stdout.String(), "profile smoke: ") {
		t.Errorf("stdout = %q, want a verdict line", stdout.String())
	}
}
