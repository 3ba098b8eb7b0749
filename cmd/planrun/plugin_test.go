package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKubectlPlugin: installed as kubectl-planrun on the PATH, planrun is a kubectl plugin:
// `kubectl planrun ARGS` runs it with ARGS, flags included, and kubectl completes its words.
func TestKubectlPlugin(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	kubectl := filepath.Join(assets, "kubectl")
	if _, err := os.Stat(kubectl); assets == "" || err != nil {
		t.Skip("no kubectl in $KUBEBUILDER_ASSETS")
	}
	bin := t.TempDir()
	data, err := os.ReadFile(planrunBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "kubectl-planrun"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kubectl, "planrun", "version", "-o", "json")
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"goVersion"`) {
		t.Fatalf("kubectl planrun version -o json: %v\n%s", err, out)
	}
	cmd = exec.Command(kubectl, "plugin", "list")
	cmd.Env = append(os.Environ(), "PATH="+bin)
	if out, _ := cmd.CombinedOutput(); !strings.Contains(string(out), "kubectl-planrun") {
		t.Errorf("kubectl plugin list does not list it:\n%s", out)
	}

	// Linked as kubectl_complete-planrun, it completes kubectl planrun … in kubectl's completion.
	if err := os.Symlink("kubectl-planrun", filepath.Join(bin, kubectlCompleteName)); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(kubectl, "__complete", "planrun", "ap")
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "apply\t") {
		t.Errorf("kubectl __complete planrun ap: %v\n%s", err, out)
	}
}
