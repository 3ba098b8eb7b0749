package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The local run lock is an flock(2) on <run>/lock. The kernel drops an flock when its process
// dies, however it dies, so "is the lock held" is never a guess. The file also records its
// holder; a holder recorded while the flock is free means the last runner died without
// releasing: that stale lock is reported, and broken only when asked (--break-lock), because the
// operator should know a run was cut off.

type fileLock struct {
	f *os.File
}

// Lock implements Store.
func (s *DirStore) Lock(_ context.Context, runID string, opts LockOptions) (Lock, error) {
	dir := s.RunDir(runID)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("%w: %s (looked in %s)", ErrRunNotFound, runID, s.Root)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := readHolder(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{RunID: runID, Holder: holder}
		}
		return nil, fmt.Errorf("lock run %s: %w", runID, err)
	}
	if holder, ok := readHolder(f); ok && !opts.BreakStale {
		f.Close() // releases the flock
		return nil, &LockedError{RunID: runID, Holder: holder, Stale: true}
	}
	me := LockHolder{PID: os.Getpid(), Started: time.Now().UTC().Truncate(time.Second), Command: strings.Join(os.Args, " ")}
	me.Host, _ = os.Hostname()
	data, _ := json.Marshal(me)
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(data, 0)
		if err == nil {
			err = f.Sync()
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock run %s: %w", runID, err)
	}
	return &fileLock{f: f}, nil
}

func readHolder(f *os.File) (LockHolder, bool) {
	var h LockHolder
	buf := make([]byte, 4096)
	n, _ := f.ReadAt(buf, 0)
	if n == 0 || json.Unmarshal(buf[:n], &h) != nil {
		return h, false
	}
	return h, true
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
