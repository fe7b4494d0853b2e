package integration

import (
	"github.com/cerbai/cerbai/integration/fake"

	"bufio"
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo_ServesThePrintedCommandsAndStopsCleanly runs `make demo`'s
// program: it must become ready, print commands that work as printed (key,
// base URL), stream, and exit 0 on SIGTERM.
func TestDemo_ServesThePrintedCommandsAndStopsCleanly(t *testing.T) {
	addr := freeAddr(t)
	cmd := exec.Command(demoBin, "-cerbai", cerbaiBin, "-listen", addr)
	cmd.Env = cleanEnv()
	// Its own process group, so cleanup can kill the demo and the cerbai
	// it started together.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed when the demo has exited
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("demo stderr:\n%s", logs.String())
		}
	})

	// Ready: the printed text arrives only once cerbai is healthy.
	printed := make(chan string, 1)
	go func() {
		var b strings.Builder
		seenNode := false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			// The Node snippet's closing heredoc marker ends the text.
			seenNode = seenNode || strings.HasPrefix(sc.Text(), "node ")
			if seenNode && sc.Text() == "EOF" {
				break
			}
		}
		printed <- b.String()
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var text string
	select {
	case text = <-printed:
	case <-done:
		t.Fatalf("demo exited before it was ready: %v", waitErr)
	case <-time.After(30 * time.Second):
		t.Fatal("demo printed no commands within 30s")
	}
	base := "http://" + addr
	for _, w := range []string{base + "/v1/chat/completions", "Bearer sk-demo-key", "curl -sSN",
		`base_url="` + base + `/v1"`, `baseURL: "` + base + `/v1"`} {
		if !strings.Contains(text, w) {
			t.Errorf("printed commands lack %q:\n%s", w, text)
		}
	}

	// The printed curl commands, done in Go: plain and streaming.
	hdr := []string{"Authorization", "Bearer sk-demo-key"}
	status, reply := completionText(t, chat(t, context.Background(), base,
		chatBody(false, "Hello through cerbai"), hdr...))
	if status != 200 || reply != "Hello through cerbai" {
		t.Errorf("got %d %q, want 200 with the echo", status, reply)
	}
	resp := chat(t, context.Background(), base, chatBody(true, "Hello"), hdr...)
	var streamed strings.Builder
	events := fake.Events(resp.Body)
	for ev := nextEvent(t, events, "first event"); ev != "[DONE]"; ev = nextEvent(t, events,
		"next event") {
		streamed.WriteString(deltaText(t, ev))
	}
	resp.Body.Close()
	if streamed.String() != "Hello" {
		t.Errorf("got streamed %q, want Hello", streamed.String())
	}

	// Stop: the demo stops cerbai and exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("demo exited with %v after SIGTERM, want status 0", waitErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("demo still running 60s after SIGTERM")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("cerbai still answers after the demo stopped")
	}
}
