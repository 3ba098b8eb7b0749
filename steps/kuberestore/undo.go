package kuberestore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/steps/kube"
)

// RecordFile is the name, in the step's artifact folder, of the list of objects the restore
// created (JSON lines), which Undo deletes.
const RecordFile = "created.jsonl"

// record is one object the restore created.
type record struct {
	Group     string `json:"group,omitempty"`
	Version   string `json:"version"`
	Resource  string `json:"resource"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

// recordWriter appends to the undo record. Undo deletes only what the record lists, so a write
// that fails (a full disk) must fail the step: the first error sticks and is returned by every
// later flush and by close.
type recordWriter struct {
	f   *os.File
	w   *bufio.Writer
	err error
}

func newRecordWriter(f *os.File) *recordWriter {
	return &recordWriter{f: f, w: bufio.NewWriterSize(f, 64<<10)}
}

func (w *recordWriter) write(line []byte) {
	if w.err == nil {
		_, w.err = w.w.Write(line)
	}
}

func (w *recordWriter) flush() error {
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// close flushes, fsyncs (the record must survive the crash that resume recovers from) and
// closes the file, returning the first error of all the writes.
func (w *recordWriter) close() error {
	err := w.flush()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// openRecord opens the list of created objects for appending: a run that resumes after a crash
// adds to what the first attempt recorded.
func (x *restorer) openRecord() error {
	dir, err := x.rc.ArtifactDir()
	if err != nil {
		return err
	}
	x.recordPath = filepath.Join(dir, RecordFile)
	if err := dropTornLine(x.recordPath); err != nil {
		return fmt.Errorf("undo record %s: %w", x.recordPath, err)
	}
	f, err := os.OpenFile(x.recordPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	x.record = newRecordWriter(f)
	return nil
}

// dropTornLine cuts a last line that a killed attempt left half-written, so that what this
// attempt appends starts on a line of its own. The object of the torn line is not lost: the
// attempt finds it on the server as one this step created and records it again.
func dropTornLine(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	// Records are short: the last newline is within the last few KiB, else there is none.
	tail := min(size, 64<<10)
	buf := make([]byte, tail)
	if _, err := f.ReadAt(buf, size-tail); err != nil {
		return err
	}
	if tail == 0 || buf[tail-1] == '\n' {
		return nil
	}
	keep := size - tail
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		keep += int64(i) + 1
	} else if size > tail {
		return fmt.Errorf("last line longer than %d bytes", tail)
	}
	return f.Truncate(keep)
}

func (x *restorer) addRecord(r record) {
	if x.record == nil {
		return
	}
	b, _ := json.Marshal(r)
	x.recMu.Lock()
	x.record.write(append(b, '\n'))
	x.recMu.Unlock()
	x.recorded.Add(1)
}

// flushRecord writes what is buffered, and returns the record's first write error.
func (x *restorer) flushRecord() error {
	if x.record == nil {
		return nil
	}
	x.recMu.Lock()
	defer x.recMu.Unlock()
	if err := x.record.flush(); err != nil {
		return fmt.Errorf("writing the undo record %s: %w", x.recordPath, err)
	}
	return nil
}

// closeRecord closes the record; an error means undo would miss objects this step created.
func (x *restorer) closeRecord() error {
	if x.record == nil {
		return nil
	}
	x.recMu.Lock()
	defer x.recMu.Unlock()
	err := x.record.close()
	x.record = nil
	if err != nil {
		return fmt.Errorf("writing the undo record %s: %w", x.recordPath, err)
	}
	return nil
}

// Undo implements engine.Undoer: it deletes the objects the restore created (each only if it is
// still the very object created: UID precondition), namespaces and CRDs last.
func (r *Restore) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	path, _ := outputs["createdFile"].(string)
	if path == "" || outputs["dryRun"] == true {
		return nil
	}
	c, err := r.Client(rc)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	seen := map[string]bool{}
	var objects, namespaces, crds []record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec record
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.UID == "" || seen[rec.UID] {
			continue
		}
		seen[rec.UID] = true
		switch {
		case rec.Group == "" && rec.Resource == "namespaces":
			namespaces = append(namespaces, rec)
		case rec.Group == "apiextensions.k8s.io" && rec.Resource == "customresourcedefinitions":
			crds = append(crds, rec)
		default:
			objects = append(objects, rec)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var problems []string
	for _, group := range [][]record{objects, namespaces, crds} {
		p, err := deleteAll(ctx, c, group, rc.DryRun)
		problems = append(problems, p...)
		if err != nil {
			return fmt.Errorf("undo of the restore: %w", err)
		}
	}
	if len(problems) > 0 {
		n := len(problems)
		if n > 10 {
			problems = append(problems[:10], fmt.Sprintf("… %d more", n-10))
		}
		return fmt.Errorf("undo of the restore: %d objects not deleted: %s", n, strings.Join(problems, "; "))
	}
	return nil
}

func deleteAll(ctx context.Context, c *kube.Client, recs []record, dry bool) ([]string, error) {
	var mu sync.Mutex
	var problems []string
	last := slices.Clone(recs)
	slices.Reverse(last) // dependents were created after what they depend on
	err := parallel.Each(ctx, defaultWorkers, last, func(ctx context.Context, rec record) error {
		uid := types.UID(rec.UID)
		policy := metav1.DeletePropagationBackground
		opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &policy}
		if dry {
			opts.DryRun = []string{"All"}
		}
		res := c.Dynamic.Resource(schema.GroupVersionResource{Group: rec.Group, Version: rec.Version, Resource: rec.Resource})
		var err error
		if rec.Namespace != "" {
			err = res.Namespace(rec.Namespace).Delete(ctx, rec.Name, opts)
		} else {
			err = res.Delete(ctx, rec.Name, opts)
		}
		// Gone, or replaced by another object of the same name: nothing of ours is left.
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			mu.Lock()
			problems = append(problems, kube.ObjectName(rec.Kind, rec.Namespace, rec.Name)+": "+kube.Reason(err))
			mu.Unlock()
		}
		return nil
	})
	return problems, err
}
