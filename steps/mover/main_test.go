package mover

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob/filesystem"
	"github.com/kopia/kopia/repo/content"

	"planrun.dev/planrun/internal/fstree"
)

// Tests open kopia repositories on kopia's own filesystem blob storage in a temporary folder;
// the storage adapter onto steps/storage is tested on its own.

const testPassword = "planrun-test-passw0rd"

// childEnv, when set, makes the test binary a mover child process (see runChild) instead of
// running tests: resume tests kill it halfway with SIGKILL.
const childEnv = "PLANRUN_MOVER_TEST_CHILD"

func TestMain(m *testing.M) {
	if op := os.Getenv(childEnv); op != "" {
		if err := runChild(op); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testRepo creates a repository in a temporary folder and opens it; it returns the folder of
// its blobs (for other connections to it).
func testRepo(t testing.TB) (repo.Repository, string) {
	t.Helper()
	blobs := filepath.Join(t.TempDir(), "blobs")
	ctx := context.Background()
	st, err := filesystem.New(ctx, &filesystem.Options{Path: blobs}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Initialize(ctx, st, &repo.NewRepositoryOptions{}, testPassword); err != nil {
		t.Fatal(err)
	}
	st.Close(ctx)
	r, err := connectRepo(ctx, blobs, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(ctx) })
	return r, blobs
}

// connectRepo connects to the repository whose blobs are in blobs, with its configuration and
// caches in work.
func connectRepo(ctx context.Context, blobs, work string) (repo.Repository, error) {
	st, err := filesystem.New(ctx, &filesystem.Options{Path: blobs}, false)
	if err != nil {
		return nil, err
	}
	defer st.Close(ctx)
	cfg := filepath.Join(work, "repository.config")
	err = repo.Connect(ctx, cfg, st, testPassword, &repo.ConnectOptions{
		ClientOptions:  repo.ClientOptions{Hostname: "test", Username: "mover"},
		CachingOptions: content.CachingOptions{CacheDirectory: filepath.Join(work, "cache")},
	})
	if err != nil {
		return nil, err
	}
	return repo.Open(ctx, cfg, testPassword, &repo.Options{})
}

// testSpec is a tree with a bit of everything, small enough for 2 shared cores.
var testSpec = fstree.Spec{
	Files: 800, SmallMin: 100, SmallMax: 32 << 10,
	Large:    []int64{4 << 20},
	Sparse:   []int64{16 << 20},
	Symlinks: 20, Hardlinks: 12, EmptyDirs: 3,
	Owners: true, Seed: 1,
}

func generate(t testing.TB, spec fstree.Spec) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	if _, err := fstree.Generate(dir, spec); err != nil {
		t.Fatal(err)
	}
	return dir
}

func snapshotTree(t testing.TB, dir string) fstree.Tree {
	t.Helper()
	tree, err := fstree.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func assertSame(t testing.TB, want fstree.Tree, dir string) {
	t.Helper()
	if d := fstree.Diff(want, snapshotTree(t, dir)); len(d) > 0 {
		if len(d) > 20 {
			d = append(d[:20], fmt.Sprintf("… and %d more", len(d)-20))
		}
		t.Errorf("%s differs from its source:\n%s", dir, strings.Join(d, "\n"))
	}
}

// events collects the events of a run.
type events struct {
	list []Event
}

func (e *events) sink(ev Event) { e.list = append(e.list, ev) }

func (e *events) warnings() []*Warning {
	var out []*Warning
	for _, ev := range e.list {
		if w, ok := ev.(*Warning); ok {
			out = append(out, w)
		}
	}
	return out
}

// runChild is the child process: it connects to the repository and runs one operation, its
// events on stdout, slowed down by a sleep before each file so that the parent can kill it
// halfway.
func runChild(op string) error {
	ctx := context.Background()
	progressInterval = 20 * time.Millisecond
	work, err := os.MkdirTemp("", "mover-child-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	r, err := connectRepo(ctx, os.Getenv("MOVER_BLOBS"), work)
	if err != nil {
		return err
	}
	defer r.Close(ctx)
	slow, _ := strconv.Atoi(os.Getenv("MOVER_SLOW_MS"))
	sleep := func(string) { time.Sleep(time.Duration(slow) * time.Millisecond) }
	emit := JSONLines(os.Stdout)
	switch op {
	case "backup":
		res, err := Backup(ctx, r, BackupOptions{
			Dir: os.Getenv("MOVER_DIR"), SourceID: os.Getenv("MOVER_SOURCE"), Stage: true,
			Events: emit, CheckpointInterval: 100 * time.Millisecond, Parallel: 2,
			hooks: &testHooks{beforeOpen: sleep},
		})
		if err != nil {
			return err
		}
		emit(&res)
	case "restore":
		res, err := Restore(ctx, r, RestoreOptions{
			Dir: os.Getenv("MOVER_DIR"), Snapshot: os.Getenv("MOVER_SNAPSHOT"), Events: emit, Parallel: 2,
			hooks: &testHooks{beforeWrite: sleep},
		})
		if err != nil {
			return err
		}
		emit(&res)
	default:
		return fmt.Errorf("unknown child operation %q", op)
	}
	return nil
}

// killHalfway starts the test binary as a child running op with env, reads its events, and
// SIGKILLs it once killWhen says so; it fails the test if the child ends first.
func killHalfway(t *testing.T, op string, env []string, killWhen func(*Progress) bool) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+op), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	killed := false
	var last string
	for sc.Scan() {
		last = sc.Text()
		ev, err := ParseEvent(sc.Bytes())
		if err != nil {
			t.Fatalf("child printed %q: %v", sc.Text(), err)
		}
		if p, ok := ev.(*Progress); ok && killWhen(p) {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
			t.Logf("killed the %s child at %s", op, sc.Text())
			break
		}
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	if !killed {
		t.Fatalf("the %s child ended before it was killed (%v); its last line: %s", op, err, last)
	}
}

// mustJSON is a test helper for messages.
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
