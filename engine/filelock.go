package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The local run lock is an flock(2) on <run>/lock. The kernel drops an flock when its process
// dies, however it dies, so "is the lock held" is never a guess on this host. The file also
// records its holder; a holder recorded while the flock is free means the last runner died
// without releasing: that stale lock is reported, and broken only when asked (--break-lock),
// because the operator should know a run was cut off. An flock says nothing about other hosts
// (a state folder on a shared file system), so a holder recorded by another host is reported as
// such, never as gone.

type fileLock struct {
	f *os.File
}

// lockFile is the lock of a run whose folder is dir.
func lockFile(dir string) string { return filepath.Join(dir, "lock") }

// lockRetries bounds how long Lock waits for a flock held only for a moment: LockState takes a
// shared flock for the time of one read, and a runner starting then must not report it as a
// live holder.
const (
	lockRetries  = 20
	lockInterval = 10 * time.Millisecond
)

// Lock implements Store.
func (s *DirStore) Lock(_ context.Context, runID string, opts LockOptions) (Lock, error) {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return nil, err
	}
	// O_NOFOLLOW: a lock file planted as a symlink must not make planrun truncate its target.
	f, err := os.OpenFile(lockFile(dir), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock run %s: %w", runID, err)
	}
	for i := 0; ; i++ {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || i == lockRetries {
			break
		}
		time.Sleep(lockInterval)
	}
	if err != nil {
		state := lockStateOf(readRecord(f), true)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{RunID: runID, State: state}
		}
		return nil, fmt.Errorf("lock run %s: %w", runID, err)
	}
	if state := lockStateOf(readRecord(f), false); state.Status != LockFree && !opts.BreakStale {
		f.Close() // releases the flock
		return nil, &LockedError{RunID: runID, State: state}
	}
	if err := writeHolder(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock run %s: recording the holder in %s: %w", runID, f.Name(), err)
	}
	return &fileLock{f: f}, nil
}

// LockState implements Store. It takes a shared flock for a moment to learn whether a runner
// holds the exclusive one, and never writes.
func (s *DirStore) LockState(_ context.Context, runID string) (LockState, error) {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return LockState{}, err
	}
	f, err := os.OpenFile(lockFile(dir), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return LockState{Status: LockFree}, nil // never locked
	}
	if err != nil {
		return LockState{}, fmt.Errorf("lock of run %s: %w", runID, err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err != nil && !errors.Is(err, syscall.EWOULDBLOCK) {
		return LockState{}, fmt.Errorf("lock of run %s: %w", runID, err)
	}
	return lockStateOf(readRecord(f), err != nil), nil
}

// lockStateOf interprets a holder record, given whether the flock is held by a live process.
func lockStateOf(record []byte, held bool) LockState {
	var st LockState
	if len(bytes.TrimSpace(record)) > 0 {
		if json.Unmarshal(record, &st.Holder) != nil || st.Holder.PID <= 0 {
			st.Holder, st.Garbled = LockHolder{}, true
		}
	}
	host, _ := os.Hostname()
	switch {
	case held:
		st.Status = LockHeld
	case st.Garbled:
		st.Status = LockStale
	case st.Holder.PID == 0:
		st.Status = LockFree
	case st.Holder.Host != host:
		st.Status = LockForeign
	default:
		st.Status = LockStale
	}
	return st
}

// readRecord reads the holder record; an unreadable file reads as a garbled record.
func readRecord(f *os.File) []byte {
	b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, 0, 1<<16), 1<<16))
	if err != nil {
		return []byte("unreadable")
	}
	return b
}

// writeHolder records this process as the holder, durably: a record that did not reach the
// disk would make a later runner take a run this one was cut off from for a free one.
func writeHolder(f *os.File) error {
	me := LockHolder{PID: os.Getpid(), Started: time.Now().UTC().Truncate(time.Second), Command: strings.Join(os.Args, " ")}
	me.Host, _ = os.Hostname()
	data, err := json.Marshal(me)
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	return f.Sync()
}

// Release empties the holder record, then drops the flock. The file stays: removing it while
// another process waits on its inode would let two runners hold two different files.
func (l *fileLock) Release() error {
	err := l.f.Truncate(0)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}
