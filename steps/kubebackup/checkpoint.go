package kubebackup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/archive"
)

// A backup checkpoints every list it finishes (rc.SaveState): its files with their counts, sizes
// and sums, all the manifest needs. When the step runs again in the same run (resumed after a
// crash, or retried), the lists the checkpoint records are not listed again — their files are
// kept in the location, checked by size — and the manifest still lists everything. A checkpoint
// of a step whose config changed since (another location, other resources) is ignored: the
// backup starts over.

// backupState is the step's checkpoint.
type backupState struct {
	// Config is a digest of what decides the content of the backup (see fingerprint).
	Config string     `json:"config"`
	Jobs   []jobState `json:"jobs"`
}

// jobState is a finished list.
type jobState struct {
	Key   string         `json:"key"`
	Files []archive.File `json:"files"`
	Count int64          `json:"count"`
	Bytes int64          `json:"bytes"` // before compression
}

// fingerprint digests the config a checkpoint is valid for: the location, the cluster, what is
// backed up and how it is stored. Credentials are not part of it (they may be fixed before a
// resume), and only a digest is kept: the journal never holds the location's query string.
func (b *Backup) fingerprint(location, cluster string) string {
	data, _ := json.Marshal([]any{location, cluster, b.Resources, b.AllResources, b.Namespaces, b.ExcludeNamespaces,
		b.LabelSelector, b.clusterScoped(), b.IncludeBoundVolumes, b.Compression, b.IncludeEndpoints})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// checkpoint records the finished lists of one attempt, on top of those an earlier attempt
// recorded and this one kept.
type checkpoint struct {
	rc   *engine.RunContext
	mu   sync.Mutex
	st   backupState
	prev map[string]jobState // from an earlier attempt, by key
}

// loadCheckpoint reads the step's checkpoint; one for another config is dropped. A dry run
// neither reads nor writes one: it writes a throwaway backup.
func loadCheckpoint(rc *engine.RunContext, config string) (*checkpoint, error) {
	cp := &checkpoint{rc: rc, st: backupState{Config: config, Jobs: []jobState{}}, prev: map[string]jobState{}}
	if rc.DryRun {
		return cp, nil
	}
	var st backupState
	ok, err := rc.LoadState(&st)
	if err != nil {
		return nil, err
	}
	if ok && st.Config == config {
		for _, j := range st.Jobs {
			cp.prev[j.Key] = j
		}
	}
	return cp, nil
}

// keep lists the files of the earlier attempt's lists that are still jobs of this one: those
// the location must keep (path → stored size).
func (cp *checkpoint) keep(jobs []*job) map[string]int64 {
	out := map[string]int64{}
	for _, j := range jobs {
		if p, ok := cp.prev[j.key()]; ok {
			for _, f := range p.Files {
				out[f.Path] = f.Bytes
			}
		}
	}
	return out
}

// reuse fills j from the earlier attempt when it finished it and every one of its files is
// present, and records it in this attempt's checkpoint; it reports whether it did.
func (cp *checkpoint) reuse(j *job, present map[string]bool) bool {
	p, ok := cp.prev[j.key()]
	if !ok {
		return false
	}
	for _, f := range p.Files {
		if !present[f.Path] {
			return false
		}
	}
	j.files, j.count, j.bytes = p.Files, p.Count, p.Bytes
	cp.mu.Lock()
	cp.st.Jobs = append(cp.st.Jobs, p)
	cp.mu.Unlock()
	return true
}

// finished records a list this attempt finished. The checkpoint is written before the list's
// worker takes the next job, so that what a crash loses is at most the lists under way.
func (cp *checkpoint) finished(ctx context.Context, j *job) error {
	if cp.rc.DryRun {
		return nil
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.st.Jobs = append(cp.st.Jobs, jobState{Key: j.key(), Files: j.files, Count: j.count, Bytes: j.bytes})
	return cp.rc.SaveState(ctx, cp.st)
}
