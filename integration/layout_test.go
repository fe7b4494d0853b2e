package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayout_ImportsFlowOneWay keeps the package graph DESIGN.md draws:
// cerbai imports tokens, upstream and health; those three import no
// cerbai package; nothing imports the command.
func TestLayout_ImportsFlowOneWay(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const mod = "github.com/cerbai/cerbai/"
	allowed := map[string][]string{
		"cerbai":   {"tokens", "upstream", "health"},
		"tokens":   nil,
		"upstream": nil,
		"health":   nil,
	}
	for pkg, want := range allowed {
		cmd := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, "./"+pkg)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list ./%s: %v", pkg, err)
		}
		for imp := range strings.Lines(string(out)) {
			imp = strings.TrimSpace(imp)
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			name := strings.TrimPrefix(imp, mod)
			ok := false
			for _, w := range want {
				ok = ok || name == w
			}
			if !ok {
				t.Errorf("%s imports %s, against the one-way graph of DESIGN.md", pkg, name)
			}
		}
	}
}
