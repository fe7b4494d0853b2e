// Command cerbai-load measures cerbai beside a direct connection and nginx
// (bench) and runs cerbai's load profiles with their thresholds (profile).
// It starts everything it measures itself, on loopback: a fake LLM, an
// mTLS token server, cerbai and, when installed, nginx.
//
//	cerbai-load bench [-rounds 3] [-out bench/results.json] [-strict]
//	cerbai-load profile -name smoke|load|stress|soak [-duration D] [-clients N]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cerbai/cerbai/integration/load"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: cerbai-load bench [flags]    compare direct, cerbai and nginx
       cerbai-load profile [flags]  run one of cerbai's load profiles
Run "cerbai-load <mode> -h" for the flags of a mode.
`

// run returns the exit status: 0 done (bench: unless -strict and a target
// missed), 1 a threshold missed or the run failed, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "profile":
		err = runProfile(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "cerbai-load: unknown mode %q\n%s", args[0], usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "cerbai-load: %v\n", err)
		return 2
	case errors.Is(err, errMissed):
		return 1
	default:
		fmt.Fprintf(stderr, "cerbai-load: %v\n", err)
		return 1
	}
}

// errMissed is returned after the summary when a threshold was missed.
var errMissed = errors.New("threshold missed")

type usageError struct{ error }

// common are the flags both modes share: what to start.
type common struct {
	cerbai       string
	nginx        string
	nginxWorkers int
	llmTLS       bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.cerbai, "cerbai", "bin/cerbai",
		`cerbai binary to run ("" leaves cerbai out)`)
	fs.StringVar(&c.nginx, "nginx", "auto",
		`nginx binary: "auto" finds it on PATH or in /usr/sbin, "" leaves nginx out`)
	fs.IntVar(&c.nginxWorkers, "nginx-workers", 0, "nginx worker_processes (0: one per CPU)")
	fs.BoolVar(&c.llmTLS, "llm-tls", false,
		"serve the fake LLM over TLS with HTTP/2 offered, as a real endpoint is")
}

func (c *common) envConfig(withNginx bool) (load.EnvConfig, error) {
	cfg := load.EnvConfig{CerbaiBin: c.cerbai, NginxWorkers: c.nginxWorkers, LLMTLS: c.llmTLS}
	if c.cerbai != "" {
		if _, err := os.Stat(c.cerbai); err != nil {
			return cfg, usageError{fmt.Errorf("-cerbai %s: %w (build it with "+
				"`go build -o bin/cerbai ./cerbai`, or pass -cerbai \"\")", c.cerbai, err)}
		}
	}
	if withNginx {
		cfg.NginxBin = c.nginx
		if c.nginx == "auto" {
			cfg.NginxBin = load.FindNginx()
		}
	}
	return cfg, nil
}

func startEnv(ctx context.Context, cfg load.EnvConfig, stderr io.Writer) (*load.Env, error) {
	if n, err := load.RaiseOpenFileLimit(); err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	} else if n < 10_000 {
		fmt.Fprintf(stderr, "warning: open file limit is %d; thousands of streams need more\n", n)
	}
	return load.StartEnv(ctx, cfg)
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cerbai-load bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	cfg := load.DefaultBenchConfig()
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds; each measures every target once")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "keep-alive connections for small JSON")
	fs.DurationVar(&cfg.Phase, "phase", cfg.Phase, "length of each timed phase")
	fs.IntVar(&cfg.IdleStreams, "idle-streams", cfg.IdleStreams, "idle streams held open")
	fs.IntVar(&cfg.SSE.Streams, "sse-streams", cfg.SSE.Streams, "concurrent SSE streams")
	fs.IntVar(&cfg.SSE.Events, "sse-events", cfg.SSE.Events, "events per SSE stream")
	fs.DurationVar(&cfg.SSE.Interval, "sse-interval", cfg.SSE.Interval, "time between events")
	fs.Int64Var(&cfg.LargeBytes, "large-bytes", cfg.LargeBytes, "size of one large body")
	out := fs.String("out", "bench/results.json", `JSON results file ("" writes none)`)
	strict := fs.Bool("strict", false, "exit 1 when an issue-5 target is missed")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := validBench(cfg, fs.NArg()); err != nil {
		return err
	}
	envCfg, err := c.envConfig(true)
	if err != nil {
		return err
	}
	env, err := startEnv(ctx, envCfg, stderr)
	if err != nil {
		return err
	}
	defer env.Close()
	fmt.Fprintf(stderr, "targets: %s\n", targetNames(env.Targets))
	if c.llmTLS {
		fmt.Fprintln(stderr, "fake LLM: TLS, HTTP/2 offered")
	}

	cfg.LLMTLS, cfg.RootCAs = c.llmTLS, env.RootCAs
	rep, err := load.RunBench(ctx, env.Targets, cfg, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nmedians of %d rounds; memory: the largest round; cut: all rounds; "+
		"CPU from /proc/<pid>/stat utime+stime at %d ticks/s (10 ms resolution)\n\n",
		cfg.Rounds, load.ClockTicksPerSecond)
	if len(rep.Checks) > 0 {
		fmt.Fprintln(stdout, "issue 5 targets:")
		if err := load.WriteChecks(stdout, rep.Checks); err != nil {
			return err
		}
	}
	if *out != "" {
		if err := writeJSON(*out, rep); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nresults written to %s\n", *out)
	}
	if *strict && !load.AllPassed(rep.Checks) {
		return errMissed
	}
	return nil
}

// parse parses args; a bad flag is a usage error (the flag package has
// already printed it with the flag list).
func parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return usageError{err}
	}
	return err
}

func validBench(cfg load.BenchConfig, nargs int) error {
	switch {
	case nargs > 0:
		return usageError{errors.New("bench takes no arguments")}
	case cfg.Rounds < 1 || cfg.Rounds > 100:
		return usageError{errors.New("-rounds must be 1..100")}
	case cfg.Conns < 1 || cfg.IdleStreams < 1 || cfg.SSE.Streams < 1 || cfg.SSE.Events < 1:
		return usageError{errors.New("-conns, -idle-streams, -sse-streams, -sse-events " +
			"must be positive")}
	case cfg.Phase <= 0 || cfg.Phase > time.Hour:
		return usageError{errors.New("-phase must be in (0, 1h]")}
	case cfg.SSE.Interval <= 0 || cfg.SSE.Interval > 10*time.Second:
		return usageError{errors.New("-sse-interval must be in (0, 10s]")}
	case cfg.LargeBytes < 1 || cfg.LargeBytes > 4<<30:
		return usageError{errors.New("-large-bytes must be 1..4GiB")}
	}
	return nil
}

func runProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cerbai-load profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	name := fs.String("name", "", "profile: "+strings.Join(load.ProfileNames, ", "))
	duration := fs.Duration("duration", 0, "run length (0: the profile's own)")
	clients := fs.Int("clients", 0, "clients, the peak for stress (0: the profile's own)")
	target := fs.String("target", "cerbai", "what to load: cerbai, nginx or direct")
	out := fs.String("out", "", `JSON results file ("" writes none)`)
	if err := parse(fs, args); err != nil {
		return err
	}
	p, err := load.LookupProfile(*name)
	if err != nil {
		return usageError{err}
	}
	if *duration != 0 {
		p.Duration = *duration
	}
	if *clients != 0 {
		p.Clients = *clients
	}
	if p.Duration <= 0 || p.Duration > 24*time.Hour || p.Clients < 1 || p.Clients > 10_000 {
		return usageError{errors.New("-duration must be in (0, 24h], -clients in 1..10000")}
	}

	switch *target {
	case "cerbai", "nginx", "direct":
	default:
		return usageError{fmt.Errorf("-target %q: want cerbai, nginx or direct", *target)}
	}

	// Start only what the target needs.
	if *target != "cerbai" {
		c.cerbai = ""
	}
	envCfg, err := c.envConfig(*target == "nginx")
	if err != nil {
		return err
	}
	env, err := startEnv(ctx, envCfg, stderr)
	if err != nil {
		return err
	}
	defer env.Close()
	t, ok := env.Target(*target)
	if !ok {
		return fmt.Errorf("-target %s: not started (is nginx installed?)", *target)
	}
	fmt.Fprintf(stderr, "profile %s against %s: %d clients, %s\n", p.Name, t.Name,
		p.Clients, p.Duration)
	res, err := load.RunProfile(ctx, t, p, stderr)
	if res != nil {
		writeProfile(stdout, res)
	}
	if err != nil {
		return err
	}
	if *out != "" {
		if err := writeJSON(*out, res); err != nil {
			return err
		}
	}
	if !res.Passed() {
		fmt.Fprintf(stdout, "profile %s: FAILED\n", p.Name)
		return errMissed
	}
	fmt.Fprintf(stdout, "profile %s: passed\n", p.Name)
	return nil
}

func writeProfile(w io.Writer, r *load.ProfileResult) {
	fmt.Fprintf(w, "\nprofile %s against %s: %d clients for %s\n", r.Profile, r.Target,
		r.Clients, r.Duration.Round(time.Millisecond))
	fmt.Fprintf(w, "requests %d (%d streaming), errors %d\n", r.Requests, r.Streams, r.Errors)
	fmt.Fprintf(w, "latency p50 %s, p95 %s, p99 %s, max %s\n", round(r.Latency.P50),
		round(r.Latency.P95), round(r.Latency.P99), round(r.Latency.Max))
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
	_ = load.WriteChecks(w, r.Checks)
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

func targetNames(ts []load.Target) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	return strings.Join(names, ", ")
}
