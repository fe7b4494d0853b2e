package load

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cerbai/cerbai/integration/fake"
)

// EnvConfig says which proxies to start besides the fake LLM.
type EnvConfig struct {
	CerbaiBin string // path of the cerbai binary; "" leaves cerbai out
	NginxBin  string // path of nginx; "" leaves nginx out
	// NginxWorkers is nginx's worker_processes; 0 means one per CPU, as
	// nginx's "auto" does.
	NginxWorkers int
	// LLMTLS serves the fake LLM over TLS (HTTP/2 offered), with a
	// certificate from the env's test CA that the proxies are told to trust.
	LLMTLS bool
}

// Env is a running set of targets: the fake LLM (the "direct" target), the
// mTLS token server cerbai needs, cerbai and nginx as subprocesses.
type Env struct {
	LLM     *FakeLLM
	Targets []Target // direct first, then cerbai and nginx when started
	// RootCAs trusts the fake LLM's certificate; nil unless LLMTLS. A
	// client for the direct target needs it (NewClient).
	RootCAs *x509.CertPool

	dir    string
	pki    *fake.PKI
	tokens *fake.TokenServer
	procs  []*child
}

// StartEnv starts the fake LLM and the configured proxies, each listening
// on a free loopback port, and waits until each answers a chat request.
// The caller must Close the Env.
func StartEnv(ctx context.Context, cfg EnvConfig) (_ *Env, err error) {
	e := &Env{}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.dir, err = os.MkdirTemp("", "cerbai-load-"); err != nil {
		return nil, fmt.Errorf("start env: %w", err)
	}
	pkiDir := filepath.Join(e.dir, "pki")
	if err := os.Mkdir(pkiDir, 0o700); err != nil {
		return nil, fmt.Errorf("start env: %w", err)
	}
	if e.pki, err = fake.NewPKI(pkiDir); err != nil {
		return nil, fmt.Errorf("start env: %w", err)
	}
	if cfg.LLMTLS {
		e.LLM, err = NewFakeLLMTLS(e.pki.ServerCertFile, e.pki.ServerKeyFile)
		e.RootCAs = e.pki.CAPool
	} else {
		e.LLM, err = NewFakeLLM()
	}
	if err != nil {
		return nil, err
	}
	e.Targets = append(e.Targets, Target{Name: "direct", URL: e.LLM.URL})
	if cfg.CerbaiBin != "" {
		if err := e.startCerbai(ctx, cfg.CerbaiBin); err != nil {
			return nil, err
		}
	}
	if cfg.NginxBin != "" {
		if err := e.startNginx(ctx, cfg.NginxBin, cfg.NginxWorkers); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Target returns the named target.
func (e *Env) Target(name string) (Target, bool) {
	for _, t := range e.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// Close stops the subprocesses, the fakes, and removes the temp directory.
func (e *Env) Close() error {
	var errs []error
	for _, c := range e.procs {
		errs = append(errs, c.stop())
	}
	if e.tokens != nil {
		e.tokens.Close()
	}
	if e.LLM != nil {
		errs = append(errs, e.LLM.Close())
	}
	if e.dir != "" {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	return errors.Join(errs...)
}

func (e *Env) startCerbai(ctx context.Context, bin string) error {
	pki := e.pki
	var err error
	if e.tokens, err = fake.NewTokenServer(pki, fake.TokenServerOptions{}); err != nil {
		return fmt.Errorf("start cerbai: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return fmt.Errorf("start cerbai: %w", err)
	}
	args := []string{
		"--listen-addr", addr,
		"--llm-url", e.LLM.URL,
		"--token-endpoint", e.tokens.URL,
		"--client-id", "cerbai-load",
		"--client-secret", "cerbai-load-secret",
		"--tls-cert-file", pki.ClientCertFile,
		"--tls-key-file", pki.ClientKeyFile,
		"--tls-ca-file", pki.CAFile,
		"--log-level", "warn",
	}
	if e.RootCAs != nil {
		args = append(args, "--llm-ca-file", pki.CAFile)
	}
	c, err := e.spawn("cerbai", bin, args, syscall.SIGTERM)
	if err != nil {
		return err
	}
	t := Target{Name: "cerbai", URL: "http://" + addr, Proc: &Proc{PID: c.cmd.Process.Pid}}
	if err := waitReady(ctx, t, c); err != nil {
		return err
	}
	e.Targets = append(e.Targets, t)
	return nil
}

// child is a subprocess with its output in a log file.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	stopSig syscall.Signal
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// spawn starts bin with a clean environment: no CERBAI_* variable of the
// caller and no proxy variables, so nothing outside the run changes it.
func (e *Env) spawn(name, bin string, args []string, stop syscall.Signal) (*child, error) {
	c := &child{name: name, logPath: filepath.Join(e.dir, name+".log"), stopSig: stop,
		done: make(chan struct{})}
	logf, err := os.Create(c.logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = cleanEnv(os.Environ())
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true, // a Ctrl-C reaches the load tool, which stops the child itself
		Pdeathsig: stop, // and a crashed load tool leaves no child behind
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	e.procs = append(e.procs, c)
	return c, nil
}

// stop signals the child and waits up to 10 s before killing it.
func (c *child) stop() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(c.stopSig)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-c.done:
		return nil
	case <-timer.C:
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("stop %s: killed after 10s", c.name)
	}
}

// failure describes a child that did not come up, with its log's tail.
func (c *child) failure(err error) error {
	b, _ := os.ReadFile(c.logPath)
	tail := string(b[max(0, len(b)-2000):])
	return fmt.Errorf("start %s: %w\n--- %s output ---\n%s", c.name, err, c.name,
		strings.TrimSpace(tail))
}

// waitReady polls t with chat requests until one succeeds (the proxy is
// listening and has a token), the child exits, or 20 s pass.
func waitReady(ctx context.Context, t Target, c *child) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	client := NewClient(1, 2*time.Second, nil) // proxies listen on plain HTTP
	defer client.CloseIdleConnections()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = chat(ctx, client, t.URL); last == nil {
			return nil
		}
		select {
		case <-c.done:
			return c.failure(fmt.Errorf("exited early: %v", c.waitErr))
		case <-ctx.Done():
			return c.failure(fmt.Errorf("not ready after 20s: %w", last))
		case <-tick.C:
		}
	}
}

func cleanEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if strings.HasPrefix(upper, "CERBAI_") || strings.HasSuffix(upper, "_PROXY") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. Limitation: another process could take it before the child binds;
// the child then fails to start and the error says so.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// RaiseOpenFileLimit lifts the soft limit on open files to the hard limit
// (thousands of streams need as many descriptors, twice over when the fake
// runs in the same process); subprocesses inherit it. It returns the new
// soft limit.
func RaiseOpenFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise open file limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise open file limit: %w", err)
	}
	return lim.Cur, nil
}
