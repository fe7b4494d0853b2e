package load

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/template"
)

// NginxToken is the fixed Authorization value nginx adds, standing in for
// the token cerbai fetches.
const NginxToken = "Bearer cerbai-load-fixed-token"

// NginxConfig is what the generated nginx.conf depends on.
type NginxConfig struct {
	Dir      string // absolute; pid, logs and temp files go here
	Listen   string // 127.0.0.1:port
	Upstream string // the fake LLM's host:port
	Workers  int
	User     string // "user x y;" line, needed only when run as root
	// UpstreamCA, when set, makes nginx reach the upstream over TLS and
	// verify its certificate against this CA file.
	UpstreamCA string
}

var nginxTemplate = template.Must(template.New("nginx.conf").Parse(
	`# Written by cerbai-load: nginx as a plain reverse proxy that adds a fixed
# Authorization header, the baseline cerbai is compared with.
{{.User}}worker_processes {{.Workers}};
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;

events {
    worker_connections 16384;
}

http {
    access_log off;
    client_body_temp_path {{.Dir}}/client_body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    keepalive_requests 1000000;

    upstream llm {
        server {{.Upstream}};
        keepalive 256;
        keepalive_requests 1000000;
    }

    server {
        listen {{.Listen}};
        location / {
{{- if .UpstreamCA}}
            proxy_pass https://llm;
            proxy_ssl_trusted_certificate {{.UpstreamCA}};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
{{- else}}
            proxy_pass http://llm;
{{- end}}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "` + NginxToken + `";
            # SSE must pass through as it arrives.
            proxy_buffering off;
            proxy_read_timeout 1h;
        }
    }
}
`))

// RenderNginxConfig returns the nginx.conf text for cfg.
func RenderNginxConfig(cfg NginxConfig) (string, error) {
	var b bytes.Buffer
	if err := nginxTemplate.Execute(&b, cfg); err != nil {
		return "", fmt.Errorf("render nginx config: %w", err)
	}
	return b.String(), nil
}

// FindNginx returns nginx's path from PATH or /usr/sbin (often not on a
// user's PATH), or "" when it is not installed.
func FindNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

func (e *Env) startNginx(ctx context.Context, bin string, workers int) error {
	dir := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("start nginx: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return fmt.Errorf("start nginx: %w", err)
	}
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	cfg := NginxConfig{Dir: dir, Listen: addr, Workers: workers,
		Upstream: e.LLM.URL[strings.Index(e.LLM.URL, "://")+3:], User: rootUserLine()}
	if e.RootCAs != nil {
		cfg.UpstreamCA = e.pki.CAFile
	}
	text, err := RenderNginxConfig(cfg)
	if err != nil {
		return err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return fmt.Errorf("start nginx: %w", err)
	}
	// SIGTERM is nginx's fast shutdown; the master stops its workers.
	c, err := e.spawn("nginx", bin, []string{"-p", dir + "/", "-c", conf,
		"-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"}, syscall.SIGTERM)
	if err != nil {
		return err
	}
	t := Target{Name: "nginx", URL: "http://" + addr,
		Proc: &Proc{PID: c.cmd.Process.Pid, WithChildren: true}}
	if err := waitReady(ctx, t, c); err != nil {
		return err
	}
	e.Targets = append(e.Targets, t)
	return nil
}

// rootUserLine keeps nginx's workers under the current user when the tool
// runs as root (nginx would otherwise switch them to "nobody"); for other
// users nginx cannot switch and needs no line.
func rootUserLine() string {
	if os.Geteuid() != 0 {
		return ""
	}
	u, err := user.Current()
	if err != nil {
		return ""
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return ""
	}
	return "user " + u.Username + " " + g.Name + ";\n"
}
