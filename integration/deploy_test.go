package integration

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests keep the shipping files (Dockerfile.distroless, deploy/,
// compose.yaml, .env.example) true to the binary and to each other. None
// needs a container engine, systemd or a cluster.

// readRepoFile returns the text of a file given relative to the repo root.
func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return string(b)
}

// goModVersion is the version on go.mod's go line ("1.26" or "1.26.0").
func goModVersion(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+(?:\.\d+)?)\s*$`).FindStringSubmatch(
		readRepoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return m[1]
}

// dockerInstructions returns the Dockerfile's instructions, one per entry,
// with continuation lines joined and comments dropped.
func dockerInstructions(text string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		out = append(out, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	return out
}

// instructions returns the arguments of every instruction named kind.
func instructions(all []string, kind string) []string {
	var out []string
	for _, in := range all {
		if k, args, _ := strings.Cut(in, " "); strings.EqualFold(k, kind) {
			out = append(out, args)
		}
	}
	return out
}

func TestDockerfile_PinsBaseImagesUserAndStaticBuild(t *testing.T) {
	ins := dockerInstructions(readRepoFile(t, "Dockerfile.distroless"))
	froms := instructions(ins, "FROM")
	if len(froms) < 2 {
		t.Fatalf("got %d FROM instructions, want a multi-stage build: %q", len(froms), froms)
	}

	// The builder is golang at go.mod's version, either as written there
	// or as its major.minor (the tag that follows the latest patch).
	modVersion := goModVersion(t)
	minor := strings.Join(strings.SplitN(modVersion, ".", 3)[:2], ".")
	builder := strings.Fields(froms[0])
	if len(builder) != 3 || !strings.EqualFold(builder[1], "AS") {
		t.Fatalf("got first stage FROM %q, want FROM golang:%s AS <name>", froms[0], minor)
	}
	if tag := builder[0]; tag != "golang:"+minor && tag != "golang:"+modVersion {
		t.Errorf("got builder image %q, want golang:%s to match go.mod's go %s",
			tag, minor, modVersion)
	}
	if got, want := froms[len(froms)-1], "gcr.io/distroless/static-debian12:nonroot"; got != want {
		t.Errorf("got final image %q, want %q", got, want)
	}
	if got := instructions(ins, "USER"); len(got) == 0 || got[len(got)-1] != "nonroot" {
		t.Errorf("got USER %q, want the last one to be nonroot", got)
	}
	if got := instructions(ins, "EXPOSE"); !slices.Contains(got, "8085") {
		t.Errorf("got EXPOSE %q, want 8085", got)
	}

	checkExecForm(t, ins, "ENTRYPOINT", []string{"/usr/local/bin/cerbai"})
	checkExecForm(t, ins, "HEALTHCHECK", []string{"/usr/local/bin/cerbai", "healthcheck"})

	build := ""
	for _, run := range instructions(ins, "RUN") {
		if strings.Contains(run, "go build") {
			build = run
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cerbai",
		"-X main.version=${VERSION}", "-X main.commit=${COMMIT}", "-X main.buildDate=${DATE}"} {
		if !strings.Contains(build, want) {
			t.Errorf("go build step %q lacks %q", build, want)
		}
	}
	for _, arg := range []string{"VERSION", "COMMIT", "DATE"} {
		if !slices.ContainsFunc(instructions(ins, "ARG"), func(a string) bool {
			return a == arg || strings.HasPrefix(a, arg+"=")
		}) {
			t.Errorf("no ARG %s for the build's -ldflags", arg)
		}
	}
}

// checkExecForm checks that the last instruction named kind ends with a
// JSON exec form (no shell: distroless has none) equal to want.
func checkExecForm(t *testing.T, ins []string, kind string, want []string) {
	t.Helper()
	all := instructions(ins, kind)
	if len(all) == 0 {
		t.Errorf("no %s instruction", kind)
		return
	}
	last := all[len(all)-1]
	i := strings.Index(last, "[")
	var got []string
	if i < 0 || json.Unmarshal([]byte(last[i:]), &got) != nil {
		t.Errorf("%s %q is not in exec form [\"...\"]", kind, last)
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %s %q, want %q", kind, got, want)
	}
}

// helpNames runs cerbai -h and returns every flag and CERBAI_ variable it
// lists. The binary is the one TestMain built; when it cannot be built,
// TestMain fails every test (this one included) rather than skipping.
func helpNames(t *testing.T) map[string]bool {
	t.Helper()
	code, stdout, stderr := runCerbai(t, nil, "-h")
	if code != 0 {
		t.Fatalf("cerbai -h: got exit status %d, want 0:\n%s%s", code, stdout, stderr)
	}
	names := map[string]bool{}
	for _, m := range helpNameRE.FindAllString(stdout+stderr, -1) {
		names[m] = true
	}
	if !names["--listen-addr"] || !names["CERBAI_LISTEN_ADDR"] {
		t.Fatalf("cerbai -h lists neither --listen-addr nor CERBAI_LISTEN_ADDR:\n%s%s",
			stdout, stderr)
	}
	return names
}

var (
	helpNameRE = regexp.MustCompile(`--[a-z][a-z0-9-]*|CERBAI_[A-Z0-9_]+`)
	// A flag in a deploy file: not inside a longer word or a run of dashes
	// (a YAML "---" or a PEM "-----BEGIN" is no flag).
	usedFlagRE = regexp.MustCompile(`(?:^|[^A-Za-z0-9_-])(--[a-z][a-z0-9-]*)`)
	usedEnvRE  = regexp.MustCompile(`CERBAI_[A-Z0-9_]+`)
)

// foreignFlags are other programs' flags that the deploy files use or
// mention; every other --flag there must be cerbai's.
var foreignFlags = map[string]string{
	"--from-file":        "kubectl create secret (secret.example.yaml)",
	"--build":            "docker compose up (compose.yaml)",
	"--save":             "redis-server",
	"--appendonly":       "redis-server",
	"--maxmemory":        "redis-server",
	"--maxmemory-policy": "redis-server",
}

// deployFiles lists, relative to the repo root, every file that configures
// cerbai for an operator.
func deployFiles(t *testing.T) []string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"compose.yaml", ".env.example"}
	err = filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d os.DirEntry,
		err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatalf("walk deploy/: %v", err)
	}
	return files
}

func TestDeploy_UsesOnlyFlagsAndVariablesTheBinaryLists(t *testing.T) {
	known := helpNames(t)
	used := 0
	for _, file := range deployFiles(t) {
		text := readRepoFile(t, file)
		var names []string
		names = append(names, usedEnvRE.FindAllString(text, -1)...)
		for _, m := range usedFlagRE.FindAllStringSubmatch(text, -1) {
			if _, ok := foreignFlags[m[1]]; !ok {
				names = append(names, m[1])
			}
		}
		for _, name := range names {
			used++
			if !known[name] {
				t.Errorf("%s uses %s, which cerbai -h does not list", file, name)
			}
		}
	}
	// Guards against a scan that silently finds nothing.
	if used < 20 {
		t.Errorf("found %d flag and variable uses in the deploy files, want at least 20", used)
	}
}

// Each *_FILE variable of the unit names a credential that LoadCredential=
// provides: a bare credential name (relative to $CREDENTIALS_DIRECTORY) or
// %d/name.
func TestSystemdUnit_HardeningAndCredentials(t *testing.T) {
	unit := readRepoFile(t, "deploy/systemd/cerbai.service")
	lines := map[string]bool{}
	for _, l := range strings.Split(unit, "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"Type=notify", "ExecStart=/usr/local/bin/cerbai", "DynamicUser=yes",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"CapabilityBoundingSet=", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter=@system-service", "EnvironmentFile=-/etc/cerbai/cerbai.env",
		"WatchdogSec=30s", "Restart=on-failure",
	} {
		if !lines[want] {
			t.Errorf("unit lacks the line %q", want)
		}
	}

	creds := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^LoadCredential=([^:\n]+):/`).
		FindAllStringSubmatch(unit, -1) {
		creds[m[1]] = true
	}
	for _, want := range []string{"client-secret", "tls.key", "proxy-tokens"} {
		if !creds[want] {
			t.Errorf("no LoadCredential=%s:...", want)
		}
	}
	fileVars := regexp.MustCompile(`(?m)^Environment=(CERBAI_[A-Z_]+_FILE)=(\S+)$`).
		FindAllStringSubmatch(unit, -1)
	if len(fileVars) < 3 {
		t.Errorf("got %d Environment=CERBAI_*_FILE lines, want 3 (secret, key, proxy keys)",
			len(fileVars))
	}
	for _, m := range fileVars {
		if name := strings.TrimPrefix(m[2], "%d/"); !creds[name] {
			t.Errorf("%s=%s names no credential; LoadCredential= gives %v", m[1], m[2],
				slices.Sorted(maps.Keys(creds)))
		}
	}
}

func TestKubernetes_DeploymentIsHardenedAndProbedOnAdminPort(t *testing.T) {
	d := readRepoFile(t, "deploy/kubernetes/deployment.yaml")
	for _, want := range []string{
		"replicas: 2",
		"readOnlyRootFilesystem: true",
		"runAsNonRoot: true",
		"allowPrivilegeEscalation: false",
		"drop:\n                - ALL",
		"seccompProfile:\n              type: RuntimeDefault",
		"defaultMode: 0440",
		"containerPort: 8085",
		"containerPort: 9085",
		"path: /healthz\n              port: admin",
		"path: /readyz\n              port: admin",
		"requests:", "limits:",
		`prometheus.io/scrape: "true"`, `prometheus.io/port: "9085"`,
	} {
		if !strings.Contains(d, want) {
			t.Errorf("deployment.yaml lacks %q", want)
		}
	}
	if got := k8sEnv(d, "CERBAI_ADMIN_ADDR"); got != ":9085" {
		t.Errorf("got CERBAI_ADMIN_ADDR %q, want \":9085\" (the probes' port)", got)
	}

	// Every file variable points into the Secret's mount, at a key the
	// example Secret defines.
	secret := readRepoFile(t, "deploy/kubernetes/secret.example.yaml")
	const mount = "/etc/cerbai/secret/"
	if !strings.Contains(d, "mountPath: "+strings.TrimSuffix(mount, "/")) {
		t.Errorf("deployment.yaml does not mount the secret at %s", mount)
	}
	for _, v := range []string{"CERBAI_TLS_CERT_FILE", "CERBAI_TLS_KEY_FILE", "CERBAI_TLS_CA_FILE",
		"CERBAI_CLIENT_SECRET_FILE", "CERBAI_PROXY_TOKEN_FILE"} {
		file, ok := strings.CutPrefix(k8sEnv(d, v), mount)
		if !ok {
			t.Errorf("%s = %q, want a file under %s", v, k8sEnv(d, v), mount)
			continue
		}
		if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(file) + `:`).MatchString(secret) {
			t.Errorf("%s names %s, which secret.example.yaml does not define", v, file)
		}
	}
}

// k8sEnv returns the value of the container env entry named name.
func k8sEnv(manifest, name string) string {
	m := regexp.MustCompile(`- name: ` + regexp.QuoteMeta(name) +
		`\n\s+value: "?([^"\n#]*?)"?\s*(?:#.*)?\n`).FindStringSubmatch(manifest)
	if m == nil {
		return ""
	}
	return m[1]
}

// Each way to run cerbai must give the drain (shutdown delay + timeout)
// time to finish before the process is killed.
func TestDeploy_GracePeriodsCoverTheDrain(t *testing.T) {
	k8s := readRepoFile(t, "deploy/kubernetes/deployment.yaml")
	unit := readRepoFile(t, "deploy/systemd/cerbai.service")
	unitEnv := readRepoFile(t, "deploy/systemd/cerbai.env.example")
	compose := readRepoFile(t, "compose.yaml")
	composeEnv := readRepoFile(t, ".env.example")

	tests := []struct {
		name                  string
		grace, delay, timeout string
	}{
		{"kubernetes", match(t, k8s, `terminationGracePeriodSeconds: (\d+)`) + "s",
			k8sEnv(k8s, "CERBAI_SHUTDOWN_DELAY"), k8sEnv(k8s, "CERBAI_SHUTDOWN_TIMEOUT")},
		{"systemd", match(t, unit, `(?m)^TimeoutStopSec=(\S+)$`),
			match(t, unitEnv, `(?m)^CERBAI_SHUTDOWN_DELAY=(\S+)$`),
			match(t, unitEnv, `(?m)^CERBAI_SHUTDOWN_TIMEOUT=(\S+)$`)},
		{"compose", match(t, compose, `stop_grace_period: (\S+)`),
			match(t, composeEnv, `(?m)^CERBAI_SHUTDOWN_DELAY=(\S+)$`),
			match(t, composeEnv, `(?m)^CERBAI_SHUTDOWN_TIMEOUT=(\S+)$`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grace, delay, timeout := duration(t, tt.grace), duration(t, tt.delay),
				duration(t, tt.timeout)
			if grace <= delay+timeout {
				t.Errorf("got grace period %v, want more than delay %v + timeout %v",
					grace, delay, timeout)
			}
		})
	}
	if got := duration(t, k8sEnv(k8s, "CERBAI_SHUTDOWN_DELAY")); got <= 0 {
		t.Errorf("got Kubernetes shutdown delay %v, want a few seconds for endpoints to update",
			got)
	}
}

func match(t *testing.T, text, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no match for %s", re)
	}
	return m[1]
}

func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("parse duration %q: %v", s, err)
	}
	return d
}

// The image builds from a context that .dockerignore filters: every Go file
// ./cerbai compiles (and go.mod, go.sum) must survive the filter.
func TestDockerignore_KeepsEverythingTheBuildCompiles(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	patterns := dockerignorePatterns(readRepoFile(t, ".dockerignore"))
	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}`+
			`{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`, "./cerbai")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list ./cerbai: %v\n%s", err, out)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		dir, err := filepath.Rel(root, fields[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fields[1:] {
			needed = append(needed, path.Join(filepath.ToSlash(dir), f))
		}
	}
	if len(needed) < 5 {
		t.Fatalf("go list found only %q, want the files of ./cerbai and its packages", needed)
	}
	for _, f := range needed {
		if dockerignored(patterns, f) {
			t.Errorf(".dockerignore excludes %s, which the image build needs", f)
		}
	}
	// And it does keep secrets and local state out.
	for _, f := range []string{".env", "certs/tls.key", ".git/config", "bin/cerbai"} {
		if !dockerignored(patterns, f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}

// dockerignorePatterns returns the patterns of a .dockerignore.
func dockerignorePatterns(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, strings.TrimPrefix(line, "/"))
		}
	}
	return out
}

// dockerignored reports whether the context path p is excluded: the last
// pattern that matches p or one of its parent directories decides, and a
// "!" pattern re-includes. Limitation: "**" is not supported (the file uses
// none); path.Match treats it as "*".
func dockerignored(patterns []string, p string) bool {
	excluded := false
	for _, pat := range patterns {
		neg := strings.HasPrefix(pat, "!")
		pat = strings.TrimPrefix(pat, "!")
		for q := p; q != "."; q = path.Dir(q) {
			if ok, _ := path.Match(pat, q); ok {
				excluded = !neg
				break
			}
		}
	}
	return excluded
}

func TestDockerignore_Matcher(t *testing.T) {
	patterns := []string{"deploy", "*.md", "docs", "!docs/keep.md"}
	tests := []struct {
		path string
		want bool
	}{
		{"deploy/systemd/cerbai.service", true},
		{"README.md", true},
		{"health/README.md", false}, // patterns are anchored at the root
		{"docs/other.txt", true},
		{"docs/keep.md", false},
		{"deployment/x.go", false},
		{"cerbai/main.go", false},
	}
	for _, tt := range tests {
		if got := dockerignored(patterns, tt.path); got != tt.want {
			t.Errorf("dockerignored(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// No YAML module is allowed, so this is a shape check, not a parser: no
// tabs, two-space indentation that only deepens under a key that opens a
// block, dedents that land on an enclosing level, no key twice in one
// mapping, and (for Kubernetes manifests) apiVersion and kind in every
// document. `make verify-deploy` parses the files with a real YAML library
// where one is installed.
func TestDeploy_YAMLFilesAreWellShaped(t *testing.T) {
	for _, file := range deployFiles(t) {
		isK8s := strings.HasPrefix(file, "deploy/kubernetes/")
		if !strings.HasSuffix(file, ".yaml") {
			continue
		}
		t.Run(file, func(t *testing.T) {
			if err := checkYAMLShape(readRepoFile(t, file), isK8s); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCheckYAMLShape_RejectsMalformedText(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"tab", "apiVersion: v1\nkind: X\nspec:\n\tx: 1\n", "tab"},
		{"odd indent", "apiVersion: v1\nkind: X\nspec:\n   x: 1\n", "not a multiple of 2"},
		{"too deep", "apiVersion: v1\nkind: X\nspec:\n    x: 1\n", "want 2"},
		{"deeper after a scalar", "apiVersion: v1\nkind: X\nspec: 1\n  x: 1\n",
			"does not open a block"},
		{"odd dedent", "apiVersion: v1\nkind: X\na:\n  b:\n    - c: 1\n" +
			"      d: 2\n   e: 3\n", "not a multiple of 2"},
		{"key without a block", "apiVersion: v1\nkind: X\na:\nb: 1\n", "has no lines"},
		{"map under a scalar item", "apiVersion: v1\nkind: X\nl:\n  - a\n    b: 1\n",
			"does not open a block"},
		{"leading space at top", "apiVersion: v1\nkind: X\n  b: 1\n", "does not open"},
		{"duplicate key", "apiVersion: v1\nkind: X\nspec:\n  x: 1\n  x: 2\n", "key \"x\" twice"},
		{"duplicate key in list item", "apiVersion: v1\nkind: X\nl:\n  - name: a\n" +
			"    name: b\n", "key \"name\" twice"},
		{"no kind", "apiVersion: v1\nmetadata:\n  name: x\n", "no kind"},
		{"second document without apiVersion", "apiVersion: v1\nkind: X\n---\nkind: Y\n",
			"document 2: no apiVersion"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkYAMLShape(tt.text, true)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCheckYAMLShape_AcceptsBlockScalarsListsAndComments(t *testing.T) {
	text := `# comment
apiVersion: v1
kind: Secret
stringData:
  # an indented comment
  tls.crt: |
    -----BEGIN CERTIFICATE-----

      odd indentation inside a block scalar is content
  name: value # trailing comment
  list:
    - a
    - name: b
      value: "x: y"
      nested:
        - c
  empty: {}
  after: "a#b"
---
apiVersion: v1
kind: ConfigMap
`
	if err := checkYAMLShape(text, true); err != nil {
		t.Errorf("got %v, want nil", err)
	}
}

var (
	// A mapping key (quoted, or plain up to the first ": "), then its value.
	yamlKeyRE = regexp.MustCompile(`^("[^"]*"|'[^']*'|[^\s"'#:-][^:#]*?|-[^\s:#][^:#]*?)` +
		`:(?:\s+(.*))?$`)
	blockScalar = regexp.MustCompile(`^[|>][-+]?$`)
)

// checkYAMLShape is described at TestDeploy_YAMLFilesAreWellShaped.
func checkYAMLShape(text string, needKind bool) error {
	type level struct {
		indent int
		keys   map[string]bool
	}
	var (
		stack     = []level{{0, map[string]bool{}}}
		opens     bool // the previous line ends in "key:" with no value
		openChild int  // where that block's lines go
		scalarTo  = -1 // inside a block scalar: lines deeper than this are content
		doc       = 1
		docLines  = 0
		top       = map[string]bool{}
	)
	endDoc := func() error {
		if docLines == 0 {
			return nil // an empty document, e.g. before a leading ---
		}
		for _, k := range []string{"apiVersion", "kind"} {
			if needKind && !top[k] {
				return fmt.Errorf("document %d: no %s", doc, k)
			}
		}
		return nil
	}
	for i, raw := range strings.Split(text, "\n") {
		lineNo := i + 1
		if strings.Contains(raw, "\t") {
			return fmt.Errorf("line %d: tab character", lineNo)
		}
		content := strings.TrimLeft(raw, " ")
		indent := len(raw) - len(content)
		if scalarTo >= 0 && (content == "" || indent > scalarTo) {
			continue // block scalar content is free text
		}
		scalarTo = -1
		content = stripYAMLComment(content)
		if content == "" {
			continue
		}
		if raw == "---" {
			if err := endDoc(); err != nil {
				return err
			}
			doc, docLines, top, opens = doc+1, 0, map[string]bool{}, false
			stack = []level{{0, map[string]bool{}}}
			continue
		}
		if indent%2 != 0 {
			return fmt.Errorf("line %d: indent %d is not a multiple of 2", lineNo, indent)
		}

		// Place the line: deeper only under an opening key, else back on
		// an enclosing level.
		cur := stack[len(stack)-1].indent
		switch {
		case indent > cur && !opens:
			return fmt.Errorf("line %d: deeper than line before, which does not open a block",
				lineNo)
		case indent > cur && indent != openChild:
			return fmt.Errorf("line %d: indent %d, want %d", lineNo, indent, openChild)
		case indent > cur:
			stack = append(stack, level{indent, map[string]bool{}})
		case opens:
			return fmt.Errorf("line %d: key before it opens a block that has no lines", lineNo)
		default:
			for len(stack) > 1 && stack[len(stack)-1].indent > indent {
				stack = stack[:len(stack)-1]
			}
			if stack[len(stack)-1].indent != indent {
				return fmt.Errorf("line %d: indent %d matches no enclosing level", lineNo,
					indent)
			}
		}

		// A list item that holds a mapping opens it two columns right of
		// its dash.
		body, itemIndent := content, indent
		if content == "-" {
			return fmt.Errorf("line %d: empty list item", lineNo)
		}
		if rest, ok := strings.CutPrefix(content, "- "); ok {
			body, itemIndent = rest, indent+2
		}
		opens = false
		docLines++
		m := yamlKeyRE.FindStringSubmatch(body)
		if m == nil {
			continue // a scalar, or a scalar list item
		}
		if itemIndent != indent {
			stack = append(stack, level{itemIndent, map[string]bool{}})
		}
		keys := stack[len(stack)-1].keys
		if keys[m[1]] {
			return fmt.Errorf("line %d: key %q twice in one mapping", lineNo, m[1])
		}
		keys[m[1]] = true
		if indent == 0 {
			top[m[1]] = true
		}
		switch value := m[2]; {
		case value == "":
			opens, openChild = true, itemIndent+2
		case blockScalar.MatchString(value):
			scalarTo = itemIndent
		}
	}
	if opens {
		return fmt.Errorf("the last key opens a block that has no lines")
	}
	return endDoc()
}

// stripYAMLComment drops a " #" comment that is not inside quotes.
func stripYAMLComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || s[i-1] == ' '):
			return strings.TrimRight(s[:i], " ")
		}
	}
	return strings.TrimRight(s, " ")
}
