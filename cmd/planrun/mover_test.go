package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"planrun.dev/planrun/internal/fstree"
	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/mover"
)

func TestMoverUsage(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no action", []string{"mover"}, "one action"},
		{"unknown action", []string{"mover", "copy", "--dir", "d", "--repository", "r"}, `unknown action "copy"`},
		{"backup without source", []string{"mover", "backup", "--dir", "d", "--repository", "r"}, "needs --source"},
		{"backup with snapshot", []string{"mover", "backup", "--dir", "d", "--repository", "r", "--source", "s", "--snapshot", "k1"}, "no --snapshot"},
		{"restore without snapshot", []string{"mover", "restore", "--dir", "d", "--repository", "r"}, "needs --snapshot, or --source and --handoff"},
		{"restore with snapshot and handoff", []string{"mover", "restore", "--dir", "d", "--repository", "r", "--snapshot", "k1", "--source", "s", "--handoff", "h"}, "not both"},
		{"restore handoff without source", []string{"mover", "restore", "--dir", "d", "--repository", "r", "--handoff", "h"}, "--handoff needs --source"},
		{"restore with source and snapshot", []string{"mover", "restore", "--dir", "d", "--repository", "r", "--snapshot", "k1", "--source", "s"}, "--handoff needs --source"},
		{"restore with zero wait", []string{"mover", "restore", "--dir", "d", "--repository", "r", "--source", "s", "--handoff", "h", "--wait", "0s"}, "--wait"},
		{"restore with stage", []string{"mover", "restore", "--dir", "d", "--repository", "r", "--snapshot", "k1", "--stage"}, "no --stage"},
		{"verify with handoff", []string{"mover", "verify", "--dir", "d", "--repository", "r", "--snapshot", "k1", "--handoff", "h"}, "no --source, --handoff"},
		{"verify with verify", []string{"mover", "verify", "--dir", "d", "--repository", "r", "--snapshot", "k1", "--verify"}, "no --verify"},
		{"no dir", []string{"mover", "backup", "--repository", "r", "--source", "s"}, "needs --dir and --repository"},
		{"bad repository URL", []string{"mover", "backup", "--dir", "d", "--repository", "ftp://x/y", "--source", "s"}, "--repository"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q, stdout %q; want exit %d and one line with %q", code, stderr, stdout, exitUsage, tc.want)
			}
		})
	}
}

// TestMoverThroughS3 runs the three actions as the mover pods do: a repository in a bucket, its
// credentials from a mounted Secret (a folder of keys, with the kubelet's ..data entries), JSON
// lines out, the last one the result.
func TestMoverThroughS3(t *testing.T) {
	srv := s3test.StartForTest(t)
	if err := srv.CreateBucket("volumes"); err != nil {
		t.Fatal(err)
	}
	repoURL := srv.URL("volumes", "repo")
	creds := t.TempDir()
	// What the kubelet mounts: the keys are links into a ..data folder.
	data := filepath.Join(creds, "..2026_11_30_00_00_00.000000001")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"accessKeyID": srv.AccessKey, "secretAccessKey": srv.SecretKey} {
		if err := os.WriteFile(filepath.Join(data, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(creds, k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(creds, "..data")); err != nil {
		t.Fatal(err)
	}
	src, dst := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	if _, err := fstree.Generate(src, fstree.Spec{Files: 60, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	common := []string{"--repository", repoURL, "--credentials-dir", creds}

	last := func(t *testing.T, stdout string) mover.Event {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		e, err := mover.ParseEvent([]byte(lines[len(lines)-1]))
		if err != nil {
			t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
		}
		return e
	}
	// The restore starts first, as the step starts it, and waits for the backup's snapshot.
	type cliRun struct {
		code           int
		stdout, stderr string
	}
	restored := make(chan cliRun, 1)
	go func() {
		code, stdout, stderr := runCLI(t, append([]string{"mover", "restore", "--dir", dst, "--source", "uid/shop/data", "--handoff", "copy-1", "--wait", "2m", "--verify"}, common...)...)
		restored <- cliRun{code, stdout, stderr}
	}()
	code, stdout, stderr := runCLI(t, append([]string{"mover", "backup", "--dir", src, "--source", "uid/shop/data", "--handoff", "copy-1"}, common...)...)
	if code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	backup, ok := last(t, stdout).(*mover.BackupResult)
	if !ok || backup.Snapshot == "" || backup.Files == 0 {
		t.Fatalf("backup's last line: %s", stdout)
	}
	for _, secret := range []string{srv.SecretKey, srv.AccessKey} {
		if strings.Contains(stdout+stderr, secret) {
			t.Fatal("a credential in the mover's output")
		}
	}
	rr := <-restored
	if rr.code != exitOK {
		t.Fatalf("restore --handoff: exit %d: %s", rr.code, rr.stderr)
	}
	if r, ok := last(t, rr.stdout).(*mover.RestoreResult); !ok || !r.Verified || r.Files != backup.Files || r.Snapshot != backup.Snapshot {
		t.Fatalf("restore's last line: %s; want the backup's snapshot %s", rr.stdout, backup.Snapshot)
	}
	// Again by snapshot ID: nothing to write.
	code, stdout, stderr = runCLI(t, append([]string{"mover", "restore", "--dir", dst, "--snapshot", backup.Snapshot}, common...)...)
	if code != exitOK {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	if r, ok := last(t, stdout).(*mover.RestoreResult); !ok || r.WrittenFiles != 0 || r.Files != backup.Files {
		t.Fatalf("restore again's last line: %s", stdout)
	}
	want, _ := fstree.Snapshot(src)
	got, _ := fstree.Snapshot(dst)
	if d := fstree.Diff(want, got); len(d) > 0 {
		t.Fatalf("restored tree differs: %v", d)
	}

	// A corrupted file: verify fails naming it, on one line, and says so in JSON too.
	var victim string
	for p, e := range want {
		if e.Type == "file" && e.Size > 0 {
			victim = p
			break
		}
	}
	f, err := os.OpenFile(filepath.Join(dst, victim), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Stat()
	if _, err := f.WriteAt([]byte{'#'}, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(filepath.Join(dst, victim), info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, append([]string{"mover", "verify", "--dir", dst, "--snapshot", backup.Snapshot}, common...)...)
	if code != exitRunFailed || !strings.Contains(stderr, victim) {
		t.Fatalf("verify of a corrupted file: exit %d, stderr %q", code, stderr)
	}
	if f, ok := last(t, stdout).(*mover.Failure); !ok || !strings.Contains(f.Message, victim) {
		t.Fatalf("verify's last line: %s", stdout)
	}

	// Wrong keys: one line that names the repository, never the keys.
	if err := os.WriteFile(filepath.Join(data, "secretAccessKey"), []byte("wrong-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, append([]string{"mover", "verify", "--dir", dst, "--snapshot", backup.Snapshot}, common...)...)
	if code != exitRunFailed || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || strings.Contains(stderr, "wrong-secret") || !strings.Contains(stderr, "volumes") {
		t.Fatalf("wrong keys: exit %d, stderr %q", code, stderr)
	}
}

func TestTerminationMessage(t *testing.T) {
	long := strings.Repeat("data/é/very-long-name/", 400)
	cases := []struct {
		name string
		e    mover.Event
		want string
	}{
		{"result as is", &mover.BackupResult{Snapshot: "k1", Files: 3}, `"snapshot":"k1"`},
		{"short failure as is", &mover.Failure{Message: "verify: 1 of 3 entries differ"}, "entries differ\"}"},
		{"long failure cut", &mover.Failure{Message: "verify: 9 of 9 entries differ: " + long}, " …\"}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := terminationMessage(tc.e)
			if len(b) > maxTerminationMessage || !strings.Contains(string(b), tc.want) || !json.Valid(b) {
				t.Errorf("%d bytes, valid JSON %v: %.200s", len(b), json.Valid(b), b)
			}
			if _, err := mover.ParseEvent(b); err != nil {
				t.Error(err)
			}
		})
	}
}
