// Command cerbai is an egress proxy for OpenAI-compatible LLM APIs. It
// obtains an OAuth2 access token (client_credentials over mutual TLS),
// keeps it fresh, puts it on every request it forwards to the configured
// LLM endpoint, and streams the answers back as they arrive.
//
// This package reads the configuration (flags and CERBAI_* variables),
// wires tokens, upstream and health together, and runs the server through
// start-up, signals and a graceful drain. run is its entry point.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/caarlos0/env/v11"
)

// Set at build time with -ldflags "-X main.version=… -X main.commit=…
// -X main.buildDate=…" (see the Makefile).
var (
	version   = "dev"
	commit    = "unknown"
	buildDate = "unknown"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFail   = 1 // cannot run, e.g. the address is taken
	exitConfig = 2 // the configuration is wrong
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], env.ToMap(os.Environ()), os.Stdout, os.Stderr))
}

// run is cerbai as a function: args without the program name, the
// environment as a map, and ctx cancelled on SIGTERM or SIGINT. It returns
// the exit status.
func run(ctx context.Context, args []string, environ map[string]string,
	stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:], environ, stderr)
	}
	cfg, problems, err := loadConfig(args, environ)
	switch {
	case err == errHelp:
		writeUsage(stdout)
		return exitOK
	case err == errVersion:
		fmt.Fprintf(stdout, "cerbai %s (commit %s, built %s)\n", version, commit, buildDate)
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "cerbai: %v\n", err)
		return exitConfig
	}
	s, more := validate(cfg, func(k string) string { return environ[k] })
	problems = append(problems, more...)
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "cerbai: the configuration has %d problem(s):\n", len(problems))
		for _, p := range problems {
			fmt.Fprintf(stderr, "  %s\n", p)
		}
		fmt.Fprintln(stderr, "run cerbai -h for every option")
		return exitConfig
	}
	return serve(ctx, s, environ, stdout)
}
