package integration

import (
	"github.com/cerbai/cerbai/integration/fake"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testVersion is stamped into the binary so --version can be checked.
const testVersion = "v0.0.0-integration"

// Binaries built once by TestMain.
var cerbaiBin, demoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cerbai-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	code := 1
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinaries builds cerbai and the demo from the repository root; a
// failed build fails every test, loudly.
func buildBinaries(dir string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	cerbaiBin = filepath.Join(dir, "cerbai")
	demoBin = filepath.Join(dir, "demo")
	builds := [][]string{
		{"build", "-ldflags", "-X main.version=" + testVersion, "-o", cerbaiBin, "./cerbai"},
		{"build", "-o", demoBin, "./integration/cmd/demo"},
	}
	for _, args := range builds {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// repoRoot walks up from the working directory to the one holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// freeAddr finds a loopback port nobody listens on right now. Another
// process may take it before we do; callers retry on a collision.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := fake.UnusedAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// proc is one running cerbai process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string // host:port of the proxy listener
	base string // http://addr

	stdout, stderr lockedBuffer
	done           chan struct{} // closed when the process has exited
	waitErr        error         // set before done closes
}

// startCerbai runs the binary with args (plus --listen-addr on a free port)
// and env (CERBAI_* entries; the test's own CERBAI_* are dropped), and
// waits until /healthz answers. It retries on a port collision.
func startCerbai(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		p := spawn(t, env, append([]string{"--listen-addr", freeAddr(t)}, args...)...)
		err := p.waitHealthy(20 * time.Second)
		if err == nil {
			return p
		}
		if attempt < 3 && strings.Contains(p.output(), "address already in use") {
			continue
		}
		t.Fatalf("start cerbai: %v\n%s", err, p.output())
	}
}

// spawn starts the binary without waiting for anything; it is killed at
// the end of the test if still running.
func spawn(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(cerbaiBin, args...), done: make(chan struct{})}
	for i, a := range args {
		if a == "--listen-addr" && i+1 < len(args) {
			p.addr = args[i+1]
			p.base = "http://" + p.addr
		}
	}
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cerbaiBin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("cerbai %v output:\n%s", args, p.output())
		}
	})
	return p
}

// cleanEnv is the test's environment without CERBAI_* and proxy settings.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "CERBAI_"), strings.HasSuffix(strings.ToUpper(k), "_PROXY"):
		default:
			out = append(out, kv)
		}
	}
	return out
}

// waitHealthy polls /healthz until it answers 200 ok, the process exits,
// or the deadline passes.
func (p *proc) waitHealthy(limit time.Duration) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	c := &http.Client{Timeout: time.Second}
	for {
		if resp, err := c.Get(p.base + "/healthz"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.TrimSpace(string(body)) == "ok" {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before /healthz answered: %v", p.waitErr)
		case <-deadline.C:
			return fmt.Errorf("/healthz did not answer 200 ok within %v", limit)
		case <-tick.C:
		}
	}
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("send %v: %v", sig, err)
	}
}

// exitCode waits for the process to end and returns its exit status.
func (p *proc) exitCode(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		p.t.Fatalf("cerbai still running after %v", limit)
	}
	var ee *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0
	case errors.As(p.waitErr, &ee):
		return ee.ExitCode()
	default:
		p.t.Fatalf("wait for cerbai: %v", p.waitErr)
		return -1
	}
}

// output is everything the process wrote, stdout then stderr.
func (p *proc) output() string { return p.stdout.String() + p.stderr.String() }

// logs parses stdout as slog JSON lines; a line that is not JSON fails the
// test (stdout must carry only structured logs).
func (p *proc) logs() []map[string]any {
	p.t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			p.t.Errorf("stdout line %q is not JSON: %v", sc.Text(), err)
			continue
		}
		out = append(out, m)
	}
	return out
}

// lockedBuffer is a bytes.Buffer safe for the process's writer goroutine
// and the test reading it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runCerbai runs the binary to completion (for -h, --version and config
// errors) and returns its exit status, stdout and stderr.
func runCerbai(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cerbaiBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case ctx.Err() != nil:
		t.Fatalf("cerbai %v still running after 20s (want it to exit)", args)
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("run cerbai %v: %v", args, err)
	return -1, "", ""
}
