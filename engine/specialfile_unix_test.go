//go:build unix

package engine_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"planrun.dev/planrun/engine"
)

// TestSpecialFiles: a plan or values path that is a FIFO, a character device or a directory, or a
// file over the size limit, gets one error at once: no hang (a FIFO without a writer), no
// endless read (/dev/zero), no attempt to hold the file in memory. The test would hang, not
// fail, if a FIFO were opened for reading.
func TestSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, engine.MaxFileSize+1); err != nil { // sparse: nothing is written
		t.Fatal(err)
	}
	plan := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(plan, []byte(ltHeader+"params: {n: {type: int, required: true}}\nsteps: [{id: a, type: test.op}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
		cause            error
	}{
		{"fifo", fifo, "it is a named pipe (FIFO), not a file", engine.ErrNotAFile},
		{"zero device", "/dev/zero", "it is a character device, not a file", engine.ErrNotAFile},
		{"directory", dir, "it is a directory, not a file", engine.ErrNotAFile},
		{"oversized", big, "more than the limit of 32 MiB", engine.ErrFileTooLarge},
	} {
		t.Run("plan "+tc.name, func(t *testing.T) {
			_, err := engine.Load(tc.path, engine.LoadOptions{})
			if !errors.Is(err, tc.cause) || err.Error() != tc.path+": cannot read plan: "+tc.want && !strings.HasSuffix(err.Error(), tc.want) {
				t.Errorf("err = %v; want %q (%v)", err, tc.want, tc.cause)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("more than one line: %q", err)
			}
		})
		t.Run("values "+tc.name, func(t *testing.T) {
			_, err := engine.Load(plan, engine.LoadOptions{Params: engine.ParamValues{Files: []string{tc.path}}})
			// One error: the file, not also "param n is required".
			lines := ltErrors(t, err)
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.path+": cannot read values file: ") || !strings.Contains(lines[0], tc.want) {
				t.Errorf("errors = %q; want one: cannot read values file: %s", lines, tc.want)
			}
			if !errors.Is(err, tc.cause) {
				t.Errorf("err is not %v", tc.cause)
			}
		})
	}
}
