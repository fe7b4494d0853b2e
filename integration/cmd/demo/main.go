// Command demo runs cerbai against loopback fakes so a newcomer can try it:
// a throwaway PKI, an mTLS OAuth2 token server and a streaming
// OpenAI-compatible LLM. It starts the cerbai binary given by -cerbai
// (`make demo` builds it first), waits until it is healthy, prints curl and
// OpenAI SDK commands to paste, and runs until Ctrl-C or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cerbai/cerbai/integration/fake"
)

const (
	demoKey     = "sk-demo-key"
	stepEvery   = 150 * time.Millisecond // pace of the fake LLM's stream
	healthLimit = 15 * time.Second
	stopLimit   = 40 * time.Second // a little over cerbai's default drain
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole demo; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("cerbai", "./bin/cerbai", "path of the cerbai binary to run")
	listen := fs.String("listen", "127.0.0.1:8085", "address cerbai listens on (loopback)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := demo(ctx, *bin, *listen, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}

func demo(ctx context.Context, bin, listen string, stdout, stderr io.Writer) error {
	// The fakes: PKI and secret in a temporary directory, removed on exit.
	dir, err := os.MkdirTemp("", "cerbai-demo-")
	if err != nil {
		return fmt.Errorf("create temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	pki, err := fake.NewPKI(dir)
	if err != nil {
		return err
	}
	ts, err := fake.NewTokenServer(pki, fake.TokenServerOptions{})
	if err != nil {
		return err
	}
	defer ts.Close()
	llm, stopLLM, err := pacedLLM()
	if err != nil {
		return err
	}
	defer stopLLM()
	secretFile := filepath.Join(dir, "client-secret")
	if err := os.WriteFile(secretFile, []byte("demo-secret\n"), 0o600); err != nil {
		return fmt.Errorf("write client secret: %w", err)
	}

	// cerbai itself, its logs on our stderr.
	cmd := exec.Command(bin,
		"--listen-addr", listen,
		"--llm-url", llm.URL,
		"--token-endpoint", ts.URL,
		"--client-id", "demo",
		"--client-secret-file", secretFile,
		"--tls-cert-file", pki.ClientCertFile,
		"--tls-key-file", pki.ClientKeyFile,
		"--tls-ca-file", pki.CAFile,
		"--proxy-token", "demo="+demoKey,
		"--access-log",
	)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start cerbai (build it with `make build`): %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Ready: print what to paste, then wait for a signal or cerbai's end.
	base := "http://" + dialAddr(listen)
	if err := waitHealthy(ctx, base+"/healthz", exited); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	printCommands(stdout, base)
	select {
	case err := <-exited:
		return fmt.Errorf("cerbai exited: %v", err)
	case <-ctx.Done():
	}
	fmt.Fprintln(stderr, "demo: stopping cerbai")
	return stopCerbai(cmd, exited)
}

// pacedLLM starts the fake LLM with its streams paced by a ticker, so a
// person watching curl -N sees the answer arrive piece by piece.
func pacedLLM() (*fake.LLM, func(), error) {
	step := make(chan struct{})
	llm, err := fake.NewLLM(fake.LLMOptions{Step: step, Events: 12})
	if err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(stepEvery)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				select {
				case step <- struct{}{}:
				default: // no stream waiting
				}
			case <-done:
				return
			}
		}
	}()
	return llm, func() { close(done); llm.Close() }, nil
}

// dialAddr turns a listen address into one to connect to.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}

// waitHealthy polls url until it answers 200, cerbai exits, or the
// deadline passes.
func waitHealthy(ctx context.Context, url string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, healthLimit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("cerbai exited before it was healthy: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}

// stopCerbai sends SIGTERM and waits for the drain; a clean exit is nil.
func stopCerbai(cmd *exec.Cmd, exited <-chan error) error {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil &&
		!errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop cerbai: %w", err)
	}
	select {
	case err := <-exited:
		// Ctrl-C reaches cerbai too (same process group); either way it
		// drains and exits 0.
		if err != nil {
			return fmt.Errorf("cerbai exited: %w", err)
		}
		return nil
	case <-time.After(stopLimit):
		_ = cmd.Process.Kill()
		return fmt.Errorf("cerbai did not stop within %v; killed", stopLimit)
	}
}

func printCommands(w io.Writer, base string) {
	r := strings.NewReplacer("{BASE}", base, "{KEY}", demoKey)
	fmt.Fprint(w, r.Replace(commands))
}

const commands = `
cerbai is ready on {BASE} (proxy key {KEY}); Ctrl-C stops the demo.
The token server and the LLM are fakes on loopback: the LLM echoes your
last message, streamed in pieces.

# Non-streaming chat completion
curl -sS {BASE}/v1/chat/completions \
  -H 'Authorization: Bearer {KEY}' -H 'Content-Type: application/json' \
  -d '{"model":"fake-model","messages":[{"role":"user","content":"Hello through cerbai"}]}'

# Streaming (server-sent events, unbuffered)
curl -sSN {BASE}/v1/chat/completions \
  -H 'Authorization: Bearer {KEY}' -H 'Content-Type: application/json' \
  -d '{"model":"fake-model","stream":true,
       "messages":[{"role":"user","content":"Hello through cerbai"}]}'

# OpenAI Python SDK (pip install openai)
python3 - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{BASE}/v1", api_key="{KEY}")
stream = client.chat.completions.create(
    model="fake-model",
    messages=[{"role": "user", "content": "Hello through cerbai"}],
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
EOF

# OpenAI Node SDK (npm install openai)
node --input-type=module <<'EOF'
import OpenAI from "openai";
const client = new OpenAI({ baseURL: "{BASE}/v1", apiKey: "{KEY}" });
const stream = await client.chat.completions.create({
  model: "fake-model",
  messages: [{ role: "user", content: "Hello through cerbai" }],
  stream: true,
});
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
process.stdout.write("\n");
EOF

`
