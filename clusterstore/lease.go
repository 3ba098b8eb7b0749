package clusterstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"planrun.dev/planrun/engine"
)

// The run lock is a coordination.k8s.io Lease named after the run, as controllers elect their
// leader: its holder renews it every third of its duration; a holder that stops renewing (its
// pod killed, its node lost, its network cut) lets it expire, and another runner may then take
// the run over (resume --break-lock: the operator, or the Job that reruns planrun, says the old
// runner is gone, as with a local lock).
//
// A Lease alone cannot stop a runner that is cut off but still alive from writing once another
// took over. So the PlanRun is fenced too: a runner taking the lock first writes the PlanRun
// (status.holder), and every checkpoint is an update of the PlanRun as that runner last wrote it.
// The old runner's next checkpoint then fails on the changed object and it stops
// (engine.LockLostError), whatever its clock says; and it stops on its own before the Lease
// could expire elsewhere (four fifths of its duration without a renewal), so it starts no new
// step meanwhile.

// DefaultLeaseDuration is how long a run's Lease lasts without renewal.
const DefaultLeaseDuration = 30 * time.Second

const (
	leasePrefix = "planrun-run-"
	// holderAnnotation records the holder (engine.LockHolder, JSON) on the Lease.
	holderAnnotation = "planrun.dev/holder"
)

func leaseName(runID string) string { return leasePrefix + runID }

// holderIdentity names this runner in Leases: host, process, and a random part (two stores in
// one process are two runners).
func holderIdentity() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

func (s *Store) leases() leaseClient { return s.cs.CoordinationV1().Leases(s.namespace) }

type leaseClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error)
	Create(ctx context.Context, lease *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error)
}

// lockState reads a Lease: free (no holder), held (renewed within its duration) or stale.
func lockState(lease *coordinationv1.Lease, now time.Time) engine.LockState {
	var st engine.LockState
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	if holder == "" {
		st.Status = engine.LockFree
		return st
	}
	if rec := lease.Annotations[holderAnnotation]; rec == "" || json.Unmarshal([]byte(rec), &st.Holder) != nil || st.Holder.PID <= 0 {
		st.Holder, st.Garbled = engine.LockHolder{}, true
	}
	st.Status = engine.LockStale
	if lease.Spec.RenewTime != nil && lease.Spec.LeaseDurationSeconds != nil &&
		now.Before(lease.Spec.RenewTime.Add(time.Duration(*lease.Spec.LeaseDurationSeconds)*time.Second)) {
		st.Status = engine.LockHeld
	}
	return st
}

// LockState implements engine.Store.
func (s *Store) LockState(ctx context.Context, runID string) (engine.LockState, error) {
	if _, err := s.get(ctx, runID); err != nil {
		return engine.LockState{}, err
	}
	lease, err := s.leases().Get(ctx, leaseName(runID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return engine.LockState{Status: engine.LockFree}, nil
	}
	if err != nil {
		return engine.LockState{}, s.apiErr("reading Lease "+leaseName(runID), err)
	}
	return lockState(lease, time.Now()), nil
}

// Lock implements engine.Store: it takes the run's Lease (a stale one only with BreakStale),
// fences the PlanRun, and keeps the Lease renewed until Release.
func (s *Store) Lock(ctx context.Context, runID string, opts engine.LockOptions) (engine.Lock, error) {
	if _, err := s.get(ctx, runID); err != nil {
		return nil, err
	}
	name := leaseName(runID)
	me := s.identity
	record, err := json.Marshal(s.holderRecord())
	if err != nil {
		return nil, err
	}
	secs := int32(s.lease / time.Second)
	var lease *coordinationv1.Lease
	for attempt := 0; lease == nil; attempt++ {
		if attempt == 10 {
			return nil, fmt.Errorf("lock run %s in %s: Lease %s kept changing while taking it", runID, s.where, name)
		}
		now := metav1.NowMicro()
		cur, err := s.leases().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			lease, err = s.leases().Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.namespace,
					Labels:      map[string]string{managedByLabel: "planrun"},
					Annotations: map[string]string{holderAnnotation: string(record)}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &me, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
			}, metav1.CreateOptions{FieldManager: fieldManager})
			if apierrors.IsAlreadyExists(err) {
				lease = nil
				continue
			}
			if err != nil {
				return nil, s.apiErr("creating Lease "+name, err)
			}
			break
		}
		if err != nil {
			return nil, s.apiErr("reading Lease "+name, err)
		}
		switch st := lockState(cur, now.Time); {
		case st.Status == engine.LockHeld, st.Status == engine.LockStale && !opts.BreakStale:
			return nil, &engine.LockedError{RunID: runID, State: st}
		}
		next := cur.DeepCopy()
		transitions := int32(0)
		if next.Spec.LeaseTransitions != nil {
			transitions = *next.Spec.LeaseTransitions
		}
		transitions++
		next.Spec = coordinationv1.LeaseSpec{HolderIdentity: &me, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now, LeaseTransitions: &transitions}
		if next.Annotations == nil {
			next.Annotations = map[string]string{}
		}
		next.Annotations[holderAnnotation] = string(record)
		lease, err = s.leases().Update(ctx, next, metav1.UpdateOptions{FieldManager: fieldManager})
		if apierrors.IsConflict(err) {
			lease = nil // another runner took or renewed it in between: look again
			continue
		}
		if err != nil {
			return nil, s.apiErr("taking Lease "+name, err)
		}
	}
	l := &leaseLock{s: s, runID: runID, lease: lease, renewed: lease.Spec.RenewTime.Time,
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.fence(ctx); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		l.releaseLease(rctx)
		cancel()
		return nil, err
	}
	s.mu.Lock()
	s.held[runID] = l
	s.mu.Unlock()
	go l.renew()
	return l, nil
}

func (s *Store) holderRecord() engine.LockHolder {
	h := engine.LockHolder{PID: os.Getpid(), Started: time.Now().UTC().Truncate(time.Second), Command: strings.Join(os.Args, " ")}
	h.Host, _ = os.Hostname()
	return h
}

// leaseLock is a held run lock: the Lease, renewed in the background, and the PlanRun as this
// runner last wrote it. Two mutexes: mu guards what the renewal and the engine read (when the
// Lease was last renewed, why it was lost) and is never held across a request; writeMu
// serializes checkpoints, which may wait on the API server.
type leaseLock struct {
	s     *Store
	runID string

	mu      sync.Mutex
	lease   *coordinationv1.Lease
	renewed time.Time
	err     *engine.LockLostError

	writeMu sync.Mutex
	obj     *unstructured.Unstructured // the PlanRun as last written by this runner

	lost, stop, done chan struct{}
	once             sync.Once
}

var _ engine.LosableLock = (*leaseLock)(nil)

// Lost implements engine.LosableLock.
func (l *leaseLock) Lost() <-chan struct{} { return l.lost }

// Err implements engine.LosableLock: nil while the lock is held.
func (l *leaseLock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		return nil
	}
	return l.err
}

// lose records why the lock is lost, once, and says so on Lost.
func (l *leaseLock) lose(reason string) *engine.LockLostError {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = &engine.LockLostError{RunID: l.runID, Reason: reason}
		close(l.lost)
	}
	return l.err
}

// giveUpAt is when this runner stops holding the run if it cannot renew: four fifths of the
// Lease after its last renewal, before any other runner may take it (clocks agreeing to within
// a fifth of the Lease: the Lease's times are its holder's).
func (l *leaseLock) giveUpAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed.Add(l.s.lease * 4 / 5)
}

// fence writes this runner into the PlanRun: from then on, a checkpoint of any earlier holder
// fails on the changed object.
func (l *leaseLock) fence(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		obj, err := l.s.get(ctx, l.runID)
		if err != nil {
			return err
		}
		if err := unstructured.SetNestedField(obj.Object, l.s.identity, "status", "holder"); err != nil {
			return err
		}
		updated, err := l.s.runs().Update(ctx, obj, metav1.UpdateOptions{FieldManager: fieldManager})
		if apierrors.IsConflict(err) && attempt < 5 {
			continue // the previous holder wrote in between: its last checkpoint is kept
		}
		if err != nil {
			return l.s.apiErr("recording the lock holder in PlanRun "+l.runID, err)
		}
		l.writeMu.Lock()
		l.obj = updated
		l.writeMu.Unlock()
		return nil
	}
}

// unavailableError is a checkpoint that could not be written before the lock would have to be
// given up. It matches engine.ErrInterrupted: the runner stops as if interrupted (no rollback:
// the run is resumed once the API server answers again).
type unavailableError struct {
	runID string
	err   error
}

func (e *unavailableError) Error() string {
	return fmt.Sprintf("checkpoint of run %s could not be written: %v; stopped as interrupted (resume it once the API server answers)", e.runID, e.err)
}

func (e *unavailableError) Unwrap() error { return e.err }

// Is makes errors.Is match engine.ErrInterrupted.
func (e *unavailableError) Is(target error) bool { return target == engine.ErrInterrupted }

// write changes the PlanRun as this runner last wrote it and updates it. A conflict means
// another runner wrote it since (the lock is lost), unless the object holds this runner's own
// last write whose answer was lost. Errors the API server may get over (a timeout, too many
// requests, a 5xx) are retried until the lock would have to be given up.
func (l *leaseLock) write(ctx context.Context, change func(*unstructured.Unstructured) error) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.Err(); err != nil {
		return err
	}
	base := l.obj
	for attempt := 0; ; attempt++ {
		obj := base.DeepCopy()
		if err := change(obj); err != nil {
			return err
		}
		deadline := l.giveUpAt()
		rctx, cancel := context.WithDeadline(ctx, deadline)
		updated, err := l.s.runs().Update(rctx, obj, metav1.UpdateOptions{FieldManager: fieldManager})
		var cur *unstructured.Unstructured
		var gerr error
		if apierrors.IsConflict(err) {
			cur, gerr = l.s.runs().Get(rctx, l.runID, metav1.GetOptions{})
		}
		cancel()
		switch {
		case err == nil:
			l.obj = updated
			return nil
		case apierrors.IsNotFound(err), apierrors.IsConflict(err) && apierrors.IsNotFound(gerr):
			return l.lose(fmt.Sprintf("PlanRun %s in %s was deleted", l.runID, l.s.where))
		case apierrors.IsConflict(err) && gerr == nil:
			if holder, _, _ := unstructured.NestedString(cur.Object, "status", "holder"); holder != l.s.identity {
				return l.lose(fmt.Sprintf("PlanRun %s in %s was changed by another runner (now held by %s)", l.runID, l.s.where, orNobody(holder)))
			}
			base = cur // this runner's own write, whose answer was lost: write over it
		case !retriable(err) && !apierrors.IsConflict(err):
			return l.s.apiErr("checkpoint of run "+l.runID, err)
		}
		if err := l.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) || attempt >= 20 {
			return &unavailableError{runID: l.runID, err: l.s.apiErr("updating PlanRun "+l.runID, err)}
		}
		select {
		case <-ctx.Done():
			return &unavailableError{runID: l.runID, err: ctx.Err()}
		case <-time.After(time.Duration(100*(attempt+1)) * time.Millisecond):
		}
	}
}

// retriable says whether an API error may go away by itself.
func retriable(err error) bool {
	return apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsUnexpectedServerError(err) ||
		errors.Is(err, context.DeadlineExceeded) || isNetwork(err)
}

// isNetwork says whether err is a failure to reach the API server at all.
func isNetwork(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF)
}

func orNobody(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}

// renew renews the Lease every third of its duration until Release, and declares the lock lost
// when another runner holds it, or when it could not be renewed by giveUpAt (before anyone else
// may take it) — on a timer of its own, so that a renewal hanging on the network cannot delay it.
func (l *leaseLock) renew() {
	defer close(l.done)
	every := l.s.lease / 3
	wait := every
	var lastErr error
	for {
		giveUp := time.Until(l.giveUpAt())
		if giveUp <= 0 {
			why := ""
			if lastErr != nil {
				why = ": " + lastErr.Error()
			}
			l.lose(fmt.Sprintf("could not renew Lease %s in %s for %s%s", leaseName(l.runID), l.s.where, (l.s.lease * 4 / 5).Round(time.Second), why))
			return
		}
		select {
		case <-l.stop:
			return
		case <-l.lost:
			return
		case <-time.After(min(wait, giveUp)):
		}
		if time.Until(l.giveUpAt()) <= 0 {
			continue // declared lost at the top
		}
		ctx, cancel := context.WithDeadline(context.Background(), l.giveUpAt())
		err := l.renewOnce(ctx)
		cancel()
		if err == nil {
			wait, lastErr = every, nil
			continue
		}
		lastErr = err
		if taken, ok := err.(leaseTaken); ok {
			l.lose(string(taken))
			return
		}
		wait = l.s.lease / 10 // retry often: the Lease is running out
	}
}

// leaseTaken: the Lease has another holder, or is gone.
type leaseTaken string

func (e leaseTaken) Error() string { return string(e) }

// renewFault, in tests, makes renewals fail as if the API server could not be reached; it may
// block until ctx ends, as a request to an unreachable server does.
var renewFault func(ctx context.Context, runID string) error

func (l *leaseLock) renewOnce(ctx context.Context) error {
	if renewFault != nil {
		if err := renewFault(ctx, l.runID); err != nil {
			return err
		}
	}
	name := leaseName(l.runID)
	cur, err := l.s.leases().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return leaseTaken(fmt.Sprintf("Lease %s in %s was deleted", name, l.s.where))
	}
	if err != nil {
		return err
	}
	if cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != l.s.identity {
		who := ""
		if cur.Spec.HolderIdentity != nil {
			who = *cur.Spec.HolderIdentity
		}
		return leaseTaken(fmt.Sprintf("Lease %s in %s is held by %s", name, l.s.where, orNobody(who)))
	}
	now := metav1.NowMicro()
	cur.Spec.RenewTime = &now
	updated, err := l.s.leases().Update(ctx, cur, metav1.UpdateOptions{FieldManager: fieldManager})
	if err != nil {
		return err // a conflict is looked at again at the next tick
	}
	l.mu.Lock()
	l.lease, l.renewed = updated, now.Time
	l.mu.Unlock()
	return nil
}

// Release implements engine.Lock: it stops renewing, and frees the Lease and the PlanRun's
// holder if this runner still holds them.
func (l *leaseLock) Release() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.s.mu.Lock()
		if l.s.held[l.runID] == l {
			delete(l.s.held, l.runID)
		}
		l.s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if l.Err() == nil {
			if werr := l.write(ctx, func(obj *unstructured.Unstructured) error {
				unstructured.RemoveNestedField(obj.Object, "status", "holder")
				return nil
			}); werr != nil {
				err = werr
			}
		}
		// Also after a loss: releaseLease frees the Lease only if this runner still holds it
		// (a runner that could not renew), never another's.
		if rerr := l.releaseLease(ctx); rerr != nil && err == nil {
			err = rerr
		}
	})
	return err
}

// releaseLease clears the Lease's holder if it is this runner.
func (l *leaseLock) releaseLease(ctx context.Context) error {
	name := leaseName(l.runID)
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := l.s.leases().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return l.s.apiErr("releasing Lease "+name, err)
		}
		if cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != l.s.identity {
			return nil
		}
		cur.Spec.HolderIdentity = nil
		delete(cur.Annotations, holderAnnotation)
		_, err = l.s.leases().Update(ctx, cur, metav1.UpdateOptions{FieldManager: fieldManager})
		if apierrors.IsConflict(err) {
			continue
		}
		return l.s.apiErr("releasing Lease "+name, err)
	}
	return fmt.Errorf("releasing Lease %s in %s: it kept changing", name, l.s.where)
}
