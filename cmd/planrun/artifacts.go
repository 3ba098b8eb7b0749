package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/stepfiles"
	"planrun.dev/planrun/steps/storage"
)

// artifactStore keeps step artifacts (logs, command output) in object storage as well as in the
// runner's folder: a run kept in a cluster is resumed by another pod or machine, and the pod's
// folder goes with it, so each step's files are uploaded, under RUN/STEP/, once the step ended.
// The journal, which a PlanRun holds, names what each step wrote; its files are here.
type artifactStore struct {
	engine.Store
	loc    storage.Location
	logger *slog.Logger

	mu       sync.Mutex
	uploaded map[string]bool // run/step whose files are uploaded
}

// maxArtifactFile bounds one uploaded file: a step's log, not a data set.
const maxArtifactFile = 256 << 20

// artifactUploadTimeout bounds one file's upload: the run waits for it.
const artifactUploadTimeout = 2 * time.Minute

// asCluster is the cluster store under store, if runs are kept in a cluster.
func asCluster(store engine.Store) (*clusterstore.Store, bool) {
	if a, ok := store.(*artifactStore); ok {
		store = a.Store
	}
	cs, ok := store.(*clusterstore.Store)
	return cs, ok
}

// openArtifacts opens --artifacts, with the keys of --artifacts-credentials-from when given
// (a Secret read through the store's cluster).
func (a *app) openArtifacts(ctx context.Context, store engine.Store) (storage.Location, error) {
	var creds *storage.Credentials
	if from := a.artifactCreds; from != "" {
		ns, name, ok := strings.Cut(from, "/")
		cs, isCluster := asCluster(store)
		if !ok || ns == "" || name == "" {
			return nil, usagef("--artifacts-credentials-from %q: want NAMESPACE/NAME", from)
		}
		if !isCluster {
			return nil, usagef("--artifacts-credentials-from: the Secret is read from the cluster of --state k8s://…")
		}
		client, err := kubernetes.NewForConfig(cs.RESTConfig())
		if err != nil {
			return nil, err
		}
		s, err := client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("--artifacts-credentials-from %s: %w", from, err)
		}
		creds = storage.NewCredentials("Secret "+from, s.Data)
	}
	loc, err := storage.Open(ctx, a.artifacts, creds)
	if err != nil {
		return nil, fmt.Errorf("--artifacts: %w", err)
	}
	return loc, nil
}

// Save implements engine.Store: the checkpoint, then the files of the steps it says ended.
func (s *artifactStore) Save(ctx context.Context, j *engine.Journal) error {
	if err := s.Store.Save(ctx, j); err != nil {
		return err
	}
	for _, rec := range j.Steps {
		if rec.Status != engine.StepSucceeded && rec.Status != engine.StepFailed && rec.Status != engine.StepRolledBack {
			continue
		}
		key := j.RunID + "/" + rec.ID
		s.mu.Lock()
		done := s.uploaded[key]
		s.uploaded[key] = true
		s.mu.Unlock()
		if done {
			continue
		}
		if err := s.upload(ctx, j.RunID, rec.ID); err != nil {
			// The checkpoint holds; only a copy of the step's logs is missing. Say so in the
			// runner's log rather than fail a migration over it.
			s.logger.Warn("the step's files were not uploaded", "step", rec.ID, "to", s.loc.String(), "err", err)
		}
	}
	return nil
}

// upload copies the regular files of a step's folder to RUN/STEP/. A step's folder is written by
// commands the plan runs, which may still be running: files are opened inside the folder only
// (os.Root), never through a link, without blocking on a FIFO, and copied up to the size they
// had when opened; each upload has a time limit, as the run waits for it.
func (s *artifactStore) upload(ctx context.Context, runID, stepID string) error {
	dir, err := s.ArtifactDir(runID, stepID)
	if err != nil {
		return err
	}
	return stepfiles.Each(dir, func(name string, f *os.File, st os.FileInfo, _ bool) error {
		if st.Size() > maxArtifactFile {
			return fmt.Errorf("%s: %d bytes, more than an artifact may be (%d)", name, st.Size(), int64(maxArtifactFile))
		}
		ctx, cancel := context.WithTimeout(ctx, artifactUploadTimeout)
		defer cancel()
		up, err := s.loc.Create(ctx, path.Join(runID, stepID, filepath.ToSlash(name)), storage.CreateOptions{Mode: st.Mode().Perm()})
		if err != nil {
			return err
		}
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(up, h), io.LimitReader(f, st.Size())); err != nil {
			up.Abort()
			return err
		}
		return up.Commit(ctx, hex.EncodeToString(h.Sum(nil)))
	})
}
