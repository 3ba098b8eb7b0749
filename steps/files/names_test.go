package files

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"testing"

	"planrun.dev/planrun/internal/safepath"
	"planrun.dev/planrun/steps/storage"
)

// listing is a Location (as an object store would be) that lists the names it is given.
type listing struct{ names []string }

func (l listing) String() string { return "test://listing" }
func (l listing) Stat(context.Context, string) (storage.Entry, error) {
	return storage.Entry{Dir: true}, nil
}
func (l listing) Walk(_ context.Context, _ string, fn func(storage.Entry) error) error {
	for _, n := range l.names {
		if err := fn(storage.Entry{Path: n, Size: 1}); err != nil {
			return err
		}
	}
	return nil
}
func (l listing) Open(context.Context, string) (io.ReadCloser, error) { return nil, fs.ErrNotExist }
func (l listing) MkdirAll(context.Context, string, fs.FileMode) error { return nil }
func (l listing) Create(context.Context, string, storage.CreateOptions) (storage.Upload, error) {
	return nil, fs.ErrPermission
}
func (l listing) Remove(context.Context, string) error    { return fs.ErrPermission }
func (l listing) RemoveAll(context.Context, string) error { return fs.ErrPermission }
func (l listing) Close() error                            { return nil }

// A source whose listing names a path outside the destination folder is refused before
// anything is copied.
func TestCopyRefusesHostileEntryNames(t *testing.T) {
	for _, name := range []string{"../evil", "a/../../evil", "/etc/passwd", `a\..\..\evil`, "a//b", "a/\x00b", ".."} {
		t.Run(name, func(t *testing.T) {
			c := &Copy{From: "x", To: "y"}
			_, _, err := c.plan(context.Background(), listing{names: []string{"ok", name}})
			if !errors.Is(err, safepath.ErrUnsafe) {
				t.Fatalf("plan: %v", err)
			}
		})
	}
	if _, items, err := (&Copy{}).plan(context.Background(), listing{names: []string{"a/b.jsonl"}}); err != nil || len(items) != 1 {
		t.Fatalf("a safe name: %v %v", items, err)
	}
}
