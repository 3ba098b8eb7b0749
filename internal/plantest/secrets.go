package plantest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// NoSecrets fails the test if one of secrets appears in text (a run's output, its errors, its
// events) or in any file under dir (journal, step logs, artifacts). The message never quotes
// the secret.
func NoSecrets(t testing.TB, dir, text string, secrets ...string) {
	t.Helper()
	check := func(where, s string) {
		for i, secret := range secrets {
			if secret != "" && strings.Contains(s, secret) {
				t.Errorf("secret %d appears in %s", i, where)
			}
		}
	}
	check("the run's output", text)
	if dir == "" {
		return
	}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		check(p, string(b))
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}
