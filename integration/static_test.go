package integration

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeBuild_StaticWithoutCgo builds the binary the way `make build`
// does and checks it is static: built with CGO_ENABLED=0 and -trimpath,
// with no ELF interpreter and no dynamic section.
func TestMakeBuild_StaticWithoutCgo(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is not on PATH: the README's commands need it")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "cerbai")
	cmd := exec.Command("make", "-s", "build", "BIN="+bin, "VERSION=test-1")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}

	out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	for _, want := range []string{"\tbuild\tCGO_ENABLED=0\n", "\tbuild\t-trimpath=true\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("go version -m does not show %q:\n%s", strings.TrimSpace(want), out)
		}
	}

	// -trimpath keeps -ldflags out of the build info: ask the binary.
	ver, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(ver), "cerbai test-1 (commit ") {
		t.Errorf("--version = %q, %v; want the version make passed", ver, err)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
}
