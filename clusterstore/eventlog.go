package clusterstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"planrun.dev/planrun/engine"
)

// A run's event log (engine.EventLogger: what planrun status -w and a console follow, progress
// included) is a ConfigMap planrun-RUN-events beside its PlanRun, owned by it (deleting the run
// deletes it). It is a ring of the run's most recent events: one data key per event, its
// sequence number (12 digits), and the event's JSON line as value. The sequence numbers go on
// from the newest in the ring whoever writes; a follower's offset is the sequence number it
// reads from next.
//
// The ring stays far under an object's 1 MiB: at most maxLogBytes of keys and lines, the
// oldest dropped first, and at most maxLogProgress progress events, the oldest of them dropped
// first — a follower needs the progress since it last looked, not a history of it, while the
// other events (steps started, finished, retried, warnings) are few and stay longer.
//
// Writing costs the API server little: the writer buffers events and writes what it has at most
// once a second (flushEvery), sooner (flushSoon) when it has something else than progress (a
// step started or finished) — fewer writes than the run's own checkpoints, which are two per
// step. Each write is a JSON merge patch of the lines added and the keys dropped, not of the
// whole ring, conditioned on the resourceVersion the writer last saw: only the run's lock
// holder writes, so a conflict is a previous writer's leftover write, and the writer reads the
// ring again and adds its events after the newest. The engine never waits on the API server for
// an event: Write only buffers, a goroutine writes; an event log that cannot be written loses
// events (the oldest first), never the run.

const (
	eventLogPrefix = "planrun-"
	eventLogSuffix = "-events"
	// seqDigits: the keys' width, so that kubectl shows them in order.
	seqDigits = 12
	// writerAnnotation records the last write (writer and batch), so that a writer whose answer
	// was lost knows, reading the ring again, whether its write was made.
	writerAnnotation = "planrun.dev/events-write"
	// logRequestTimeout bounds one write or read of the log.
	logRequestTimeout = 10 * time.Second
	// maxPartial bounds the start of a line the writer keeps until its end (the engine's lines
	// are at most 1 MiB).
	maxPartial = 2 << 20
)

// The ring's bounds and the writer's pace (variables for tests).
var (
	// maxLogBytes bounds the keys and lines of the ring.
	maxLogBytes = 512 << 10
	// maxLogProgress bounds the progress events of the ring.
	maxLogProgress = 300
	// maxLogLine bounds an event: a longer one is kept without its outputs and with its texts
	// cut (the journal has them whole), or not at all.
	maxLogLine = 64 << 10
	// flushEvery is how often the writer writes progress at most; flushSoon, other events.
	flushEvery = time.Second
	flushSoon  = 250 * time.Millisecond
	// closeTimeout bounds how long Close tries to write what is left (while the API server
	// does not answer, the run waits that long at its end).
	closeTimeout = 5 * time.Second
)

var _ engine.EventLogger = (*Store)(nil)

// eventLogName names the ConfigMap of a run's event log; "" when the run id is too long for one
// (a run id may be as long as a Lease name allows; such a run keeps no event log).
func eventLogName(runID string) string {
	name := eventLogPrefix + runID + eventLogSuffix
	if len(name) > validation.DNS1123SubdomainMaxLength {
		return ""
	}
	return name
}

func (s *Store) configMaps() configMapClient { return s.cs.CoreV1().ConfigMaps(s.namespace) }

type configMapClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.ConfigMap, error)
	Create(ctx context.Context, cm *corev1.ConfigMap, opts metav1.CreateOptions) (*corev1.ConfigMap, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*corev1.ConfigMap, error)
}

// OpenEventLog implements engine.EventLogger. It makes no request: the writer reads and writes
// the ring in the background, the first time it has events.
func (s *Store) OpenEventLog(runID string) (io.WriteCloser, error) {
	if err := checkRunID(runID); err != nil {
		return nil, err
	}
	name := eventLogName(runID)
	if name == "" {
		return nil, fmt.Errorf("run id %q is too long to name its event log", runID)
	}
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	w := &eventWriter{s: s, runID: runID, name: name, id: s.identity + "/" + hex.EncodeToString(nonce),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w, nil
}

// ReadEvents implements engine.EventLogger: the events of the ring from sequence number offset
// on (from its oldest when offset is older), and the sequence number after the newest. An
// offset past the newest (the log was made anew) reads the ring from its start. A run without
// a log yet has no events.
func (s *Store) ReadEvents(runID string, offset int64) ([]engine.Event, int64, error) {
	if err := checkRunID(runID); err != nil {
		return nil, offset, fmt.Errorf("%w: %s (%v)", engine.ErrRunNotFound, runID, err)
	}
	name := eventLogName(runID)
	if name == "" {
		return nil, offset, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), logRequestTimeout)
	defer cancel()
	cm, err := s.configMaps().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, offset, nil
	}
	if err != nil {
		return nil, offset, s.apiErr("reading the event log of run "+runID, err)
	}
	entries := ringOf(cm)
	next := int64(0)
	if len(entries) > 0 {
		next = entries[len(entries)-1].seq + 1
	}
	if offset > next || offset < 0 {
		offset = 0
	}
	var out []engine.Event
	for _, e := range entries {
		if e.seq < offset {
			continue
		}
		var ev engine.Event
		if json.Unmarshal([]byte(cm.Data[e.key]), &ev) == nil {
			out = append(out, ev)
		}
	}
	return out, next, nil
}

// entry is an event of the ring.
type entry struct {
	seq      int64
	key      string
	size     int // of its key and line
	progress bool
}

// ringOf lists the events of a log ConfigMap in order (keys that are not sequence numbers are
// not events).
func ringOf(cm *corev1.ConfigMap) []entry {
	out := make([]entry, 0, len(cm.Data))
	for k, v := range cm.Data {
		seq, err := strconv.ParseInt(k, 10, 64)
		if err != nil || seq < 0 {
			continue
		}
		out = append(out, entry{seq: seq, key: k, size: len(k) + len(v), progress: isProgress([]byte(v))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func seqKey(seq int64) string { return fmt.Sprintf("%0*d", seqDigits, seq) }

// isProgress says whether a line is a step.progress event.
func isProgress(line []byte) bool {
	var e struct {
		Type engine.EventType `json:"type"`
	}
	return json.Unmarshal(line, &e) == nil && e.Type == engine.EventStepProgress
}

// line is an event to write.
type line struct {
	data     []byte
	progress bool
}

// eventWriter is a run's event log as the engine writes it.
type eventWriter struct {
	s               *Store
	runID, name, id string // id: this writer, in writerAnnotation

	mu      sync.Mutex
	partial []byte // the start of a line, until its newline
	pending []line // complete lines not written yet
	urgent  bool   // pending holds an event other than progress
	closed  bool

	wake, stop, done chan struct{}
	ctx              context.Context // of every request; cancelled closeTimeout after Close
	cancel           context.CancelFunc

	// The writing goroutine's own.
	batch   []line // lines being written, until they are
	batchID string // writerAnnotation of the write of batch
	batches int
	owner   *metav1.OwnerReference
	cm      *corev1.ConfigMap // the ring as last read or written; nil: to be read
	ring    []entry
	gone    bool  // the run is gone: nothing more is written
	err     error // of the last write
}

// Write implements io.Writer: it takes the complete lines of p for the next write of the ring.
func (w *eventWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, errors.New("event log closed")
	}
	data := append(w.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		w.addLocked(data[:i])
		data = data[i+1:]
	}
	w.partial = nil
	if len(data) > 0 && len(data) <= maxPartial { // a line without end is dropped
		w.partial = bytes.Clone(data)
	}
	return len(p), nil
}

func (w *eventWriter) addLocked(data []byte) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return
	}
	if len(data) > maxLogLine {
		if data = shorten(data); data == nil {
			return
		}
	} else {
		data = bytes.Clone(data)
	}
	l := line{data: data, progress: isProgress(data)}
	w.pending = append(w.pending, l)
	w.urgent = w.urgent || !l.progress
	w.pending = trim(w.pending)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// shorten returns an event too long for the ring without its outputs and with its texts cut,
// nil when it is still too long or is no event.
func shorten(data []byte) []byte {
	var e engine.Event
	if json.Unmarshal(data, &e) != nil {
		return nil
	}
	e.Outputs = nil
	for _, s := range []*string{&e.Error, &e.Message} {
		if len(*s) > 4096 {
			*s = (*s)[:4096] + "…"
		}
	}
	out, err := json.Marshal(e)
	if err != nil || len(out) > maxLogLine {
		return nil
	}
	return out
}

// trim drops the oldest lines that the ring could not hold anyway, as the ring drops them.
func trim(lines []line) []line {
	size, progress := 0, 0
	for _, l := range lines {
		size += seqDigits + len(l.data)
		if l.progress {
			progress++
		}
	}
	if size <= maxLogBytes && progress <= maxLogProgress {
		return lines
	}
	out := evict(len(lines), func(i int) (int, bool) { return seqDigits + len(lines[i].data), lines[i].progress })
	kept := lines[:0:0]
	for i, l := range lines {
		if !out[i] {
			kept = append(kept, l)
		}
	}
	return kept
}

// evict says which of n events, oldest first, of the given sizes and kinds, the ring drops: the
// oldest progress events beyond maxLogProgress, then the oldest events beyond maxLogBytes.
func evict(n int, event func(i int) (size int, progress bool)) []bool {
	size, progress := 0, 0
	for i := range n {
		sz, p := event(i)
		size += sz
		if p {
			progress++
		}
	}
	out := make([]bool, n)
	for i := 0; i < n && progress > maxLogProgress; i++ {
		if sz, p := event(i); p {
			out[i] = true
			progress--
			size -= sz
		}
	}
	for i := 0; i < n && size > maxLogBytes; i++ {
		if !out[i] {
			sz, _ := event(i)
			out[i] = true
			size -= sz
		}
	}
	return out
}

// Close implements io.Closer: it writes what is left (for closeTimeout at most) and stops.
func (w *eventWriter) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	giveUp := time.AfterFunc(closeTimeout, w.cancel) // a request under way included
	<-w.done
	giveUp.Stop()
	w.cancel()
	return w.err
}

// run writes the ring as lines come, at the pace of flushEvery and flushSoon, until Close.
func (w *eventWriter) run() {
	defer close(w.done)
	var last time.Time // of the last write
	failures := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		w.mu.Lock()
		waiting, urgent := len(w.pending) > 0 || w.batch != nil, w.urgent
		w.mu.Unlock()
		var due <-chan time.Time
		if waiting && !w.gone {
			gap := flushEvery
			if urgent {
				gap = flushSoon
			}
			if failures > 0 {
				gap = min(time.Duration(failures)*flushEvery, 10*flushEvery)
			}
			timer.Reset(max(0, time.Until(last.Add(gap))))
			due = timer.C
		}
		select {
		case <-w.stop:
			w.drain(w.ctx)
			return
		case <-w.wake:
		case <-due:
			last = time.Now()
			ctx, cancel := context.WithTimeout(w.ctx, logRequestTimeout)
			if w.err = w.flush(ctx); w.err != nil {
				failures++
			} else {
				failures = 0
			}
			cancel()
		}
		if due != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// drain writes what is left, retrying errors that may pass until ctx ends.
func (w *eventWriter) drain(ctx context.Context) {
	for attempt := 1; !w.gone; attempt++ {
		w.mu.Lock()
		waiting := len(w.pending) > 0 || w.batch != nil
		w.mu.Unlock()
		if !waiting {
			return
		}
		if w.err = w.flush(ctx); w.err == nil {
			continue
		}
		if !retriable(w.err) && !apierrors.IsConflict(w.err) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
}

// flush writes the lines pending, or first those of a write that failed.
func (w *eventWriter) flush(ctx context.Context) error {
	if w.batch == nil {
		w.mu.Lock()
		w.batch, w.pending, w.urgent = w.pending, nil, false
		w.mu.Unlock()
		if len(w.batch) == 0 {
			w.batch = nil
			return nil
		}
		w.batches++
		w.batchID = w.id + "/" + strconv.Itoa(w.batches)
	}
	err := w.write(ctx)
	if err == nil || w.gone {
		w.batch = nil
	}
	return err
}

// write adds the batch to the ring: a merge patch over the ring as last seen, read again after a
// conflict or an error (a write whose answer was lost is not made twice).
func (w *eventWriter) write(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if w.cm == nil {
			cm, err := w.s.configMaps().Get(ctx, w.name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				w.ring = nil
			case err != nil:
				w.gone = apierrors.IsForbidden(err)
				return w.s.apiErr("reading the event log of run "+w.runID, err)
			case cm.Annotations[writerAnnotation] == w.batchID:
				w.cm, w.ring = cm, ringOf(cm)
				return nil // written, its answer lost
			default:
				w.cm, w.ring = cm, ringOf(cm)
			}
		}
		if w.owner == nil {
			ref, err := w.s.OwnerReference(ctx, w.runID)
			if errors.Is(err, engine.ErrRunNotFound) {
				w.gone = true
				return err
			}
			if err != nil {
				return err
			}
			w.owner = &ref
		}
		var err error
		if w.cm == nil {
			err = w.create(ctx)
		} else {
			err = w.patch(ctx)
		}
		switch {
		case err == nil:
			return nil
		case (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)) && attempt < 5:
			w.cm = nil // another writer's leftover, or the log deleted: read it again
		case apierrors.IsForbidden(err):
			// The runner may not write it (a Role from before event logs): it will not be
			// allowed later in the run either.
			w.gone = true
			return w.s.apiErr("writing the event log of run "+w.runID, err)
		default:
			w.cm = nil // the write may have been made: read the ring again before the next
			return w.s.apiErr("writing the event log of run "+w.runID, err)
		}
	}
}

// add puts the batch after the newest event of the ring and drops the oldest events it cannot
// hold: the ring after the write, the keys and lines to write, and the keys to remove.
func (w *eventWriter) add() (ring []entry, set map[string]string, drop []string) {
	next := int64(0)
	if len(w.ring) > 0 {
		next = w.ring[len(w.ring)-1].seq + 1
	}
	all := append([]entry(nil), w.ring...)
	set = map[string]string{}
	for i, l := range w.batch {
		e := entry{seq: next + int64(i), key: seqKey(next + int64(i)), progress: l.progress}
		e.size = len(e.key) + len(l.data)
		all = append(all, e)
		set[e.key] = string(l.data)
	}
	out := evict(len(all), func(i int) (int, bool) { return all[i].size, all[i].progress })
	for i, e := range all {
		switch _, added := set[e.key]; {
		case !out[i]:
			ring = append(ring, e)
		case added:
			delete(set, e.key) // dropped as soon as made
		default:
			drop = append(drop, e.key)
		}
	}
	return ring, set, drop
}

func (w *eventWriter) create(ctx context.Context) error {
	ring, set, _ := w.add()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: w.s.namespace,
			Labels:          w.labels(),
			Annotations:     map[string]string{writerAnnotation: w.batchID},
			OwnerReferences: []metav1.OwnerReference{*w.owner}},
		Data: set,
	}
	created, err := w.s.configMaps().Create(ctx, cm, metav1.CreateOptions{FieldManager: fieldManager})
	if err != nil {
		return err
	}
	w.cm, w.ring = created, ring
	return nil
}

func (w *eventWriter) labels() map[string]string {
	labels := map[string]string{managedByLabel: "planrun"}
	if v := LabelValue(w.runID); v != "" {
		labels[runLabel] = v
	}
	return labels
}

func (w *eventWriter) patch(ctx context.Context) error {
	ring, set, drop := w.add()
	data := make(map[string]any, len(set)+len(drop))
	for k, v := range set {
		data[k] = v
	}
	for _, k := range drop {
		data[k] = nil
	}
	meta := map[string]any{
		"resourceVersion": w.cm.ResourceVersion, // a conflict when someone else wrote since
		"annotations":     map[string]any{writerAnnotation: w.batchID},
	}
	if !ownedBy(w.cm, w.owner.UID) {
		// The log of an earlier run of the same id (not deleted with it yet): this run's from
		// now on, its events dropped. The sequence numbers go on, so that a follower of the
		// earlier run reads only this run's events.
		meta["ownerReferences"] = []metav1.OwnerReference{*w.owner}
		meta["labels"] = w.labels()
		for _, e := range ring {
			if _, added := set[e.key]; !added {
				data[e.key] = nil
			}
		}
		kept := ring[:0]
		for _, e := range ring {
			if _, added := set[e.key]; added {
				kept = append(kept, e)
			}
		}
		ring = kept
	}
	body, err := json.Marshal(map[string]any{"metadata": meta, "data": data})
	if err != nil {
		return err
	}
	patched, err := w.s.configMaps().Patch(ctx, w.name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: fieldManager})
	if err != nil {
		return err
	}
	w.cm, w.ring = patched, ring
	return nil
}

func ownedBy(cm *corev1.ConfigMap, uid types.UID) bool {
	for _, r := range cm.OwnerReferences {
		if r.UID == uid {
			return true
		}
	}
	return false
}
