package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// healthcheck is the `cerbai healthcheck` subcommand, for a container's
// HEALTHCHECK where there is no shell or curl: it reads the same flags and
// environment as the server, without validating the rest, GETs /healthz on
// the admin listener if there is one, else on the proxy listener, and
// returns 0 on "200 ok", 1 otherwise.
func healthcheck(args []string, environ map[string]string, stderr io.Writer) int {
	cfg, _, err := loadConfig(args, environ)
	if err == errHelp {
		fmt.Fprintln(stderr, "usage: cerbai healthcheck [the server's flags]")
		return exitOK
	}
	addr, scheme := cfg.ListenAddr, "http"
	if cfg.AdminAddr != "" {
		addr = cfg.AdminAddr
	} else if cfg.ListenCert != "" {
		scheme = "https"
	}
	target, err := healthURL(scheme, addr)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return exitFail
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil, // a health check never goes through HTTP_PROXY
		// The check asks this very process whether it serves; the
		// certificate is for the names clients use, not for 127.0.0.1.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, target, nil)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return exitFail
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		fmt.Fprintf(stderr, "healthcheck: %s answered %d\n", target, resp.StatusCode)
		return exitFail
	}
	return exitOK
}

// healthURL builds the /healthz URL for a listen address; an empty or
// unspecified host means this machine's loopback.
func healthURL(scheme, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz", nil
}
