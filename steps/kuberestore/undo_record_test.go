package kuberestore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A killed attempt may leave the last record half-written; the next attempt's records must start
// on lines of their own, so the torn line is cut and every complete one kept.
func TestDropTornLine(t *testing.T) {
	full := `{"version":"v1","resource":"namespaces","kind":"Namespace","name":"a","uid":"1"}` + "\n"
	for _, tc := range []struct{ name, in, want string }{
		{"missing file", "", ""},
		{"empty", "", ""},
		{"complete lines", full + full, full + full},
		{"torn last line", full + `{"version":"v1","r`, full},
		{"only a torn line", `{"version":"v1","r`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), RecordFile)
			if tc.name != "missing file" {
				if err := os.WriteFile(path, []byte(tc.in), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := dropTornLine(path); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if tc.name == "missing file" {
				if !os.IsNotExist(err) {
					t.Fatalf("created the file: %v", err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

// A full disk must fail the restore loudly: every write of the undo record is checked, the first
// error sticks, and close (flush, fsync, close) returns it. /dev/full fails every write with
// ENOSPC, as a full disk does.
func TestUndoRecordWriteFailureSurfaces(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		wantErr    error
	}{
		{"disk with room", filepath.Join(t.TempDir(), RecordFile), nil},
		{"full disk", "/dev/full", syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.OpenFile(tc.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				t.Skipf("cannot open %s: %v", tc.path, err)
			}
			x := &restorer{recordPath: tc.path, record: newRecordWriter(f)}
			x.addRecord(record{Version: "v1", Resource: "namespaces", Kind: "Namespace", Name: "a", UID: "1"})
			ferr := x.flushRecord()
			x.addRecord(record{Version: "v1", Resource: "namespaces", Kind: "Namespace", Name: "b", UID: "2"})
			cerr := x.closeRecord()
			for what, err := range map[string]error{"flush": ferr, "close": cerr} {
				if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("%s: %v, want %v", what, err, tc.wantErr)
				}
				if err != nil && !strings.Contains(err.Error(), "undo record "+tc.path) {
					t.Errorf("%s: error %q does not name the undo record", what, err)
				}
			}
			if tc.wantErr != nil {
				return
			}
			b, err := os.ReadFile(tc.path)
			if err != nil || strings.Count(string(b), "\n") != 2 {
				t.Fatalf("record %q (%v), want 2 lines", b, err)
			}
		})
	}
}
