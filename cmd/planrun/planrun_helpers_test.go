package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
)

// runPlanrun runs planrun with -o json in dir, SIGKILLs it at kp (if set), and returns its
// events and stderr as well as its exit status, for the messages of failing tests.
func runPlanrun(t *testing.T, dir string, kp *plantest.KillPoint, args ...string) plantest.Result {
	t.Helper()
	return plantest.RunBinary(t, planrunBin, dir, plantest.RunOptions{Kill: kp}, args...)
}

func writePlan(t *testing.T, dir, name, src string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func outputInt(t *testing.T, out engine.Outputs, key string) int64 {
	t.Helper()
	switch v := out[key].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	case json.Number:
		n, err := v.Int64()
		if err == nil {
			return n
		}
	}
	t.Fatalf("outputs.%s = %#v, want a number (outputs %v)", key, out[key], out)
	return 0
}

// runActions loads a run and says who did what to it ("apply:alice cancel:bob"), and its status.
func runActions(t *testing.T, store engine.Store, runID string) (string, engine.RunStatus) {
	t.Helper()
	j, err := store.Load(t.Context(), runID)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, 0, len(j.Actions))
	for _, a := range j.Actions {
		got = append(got, a.Action+":"+a.By)
	}
	return strings.Join(got, " "), j.Status
}
