package engine

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestSharedValues(t *testing.T) {
	var s sharedValues
	calls := 0
	mk := func(v string) func() (any, error) {
		return func() (any, error) { calls++; return v, nil }
	}
	// A value made while another is being made (an etcd client that needs the Kubernetes
	// client for its certificates) must not deadlock.
	outer, err := s.get("etcd", func() (any, error) {
		inner, err := s.get("kube", mk("kube-client"))
		return "etcd+" + inner.(string), err
	})
	if err != nil || outer != "etcd+kube-client" {
		t.Fatalf("got %v, %v", outer, err)
	}
	if v, _ := s.get("kube", mk("other")); v != "kube-client" {
		t.Fatalf("kube made again: %v", v)
	}
	// An error is not kept: the next call makes the value again.
	if _, err := s.get("x", func() (any, error) { return nil, errors.New("down") }); err == nil {
		t.Fatal("want the error")
	}
	if v, err := s.get("x", mk("up")); err != nil || v != "up" {
		t.Fatalf("after an error: %v %v", v, err)
	}
	// Concurrent callers of one key get one value, made once.
	calls = 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[any]bool{}
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _ := s.get("once", func() (any, error) { mu.Lock(); calls++; mu.Unlock(); return new(int), nil })
			mu.Lock()
			got[v] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	if calls != 1 || len(got) != 1 {
		t.Fatalf("made %d times, %d distinct values", calls, len(got))
	}
}

type closer struct {
	name   string
	closed *[]string
	err    error
}

func (c *closer) Close() error { *c.closed = append(*c.closed, c.name); return c.err }

// Values that are io.Closers are closed newest first, errors logged, and forgotten.
func TestSharedValuesClose(t *testing.T) {
	var s sharedValues
	var closed []string
	var logs strings.Builder
	s.get("kube", func() (any, error) { return &closer{name: "kube", closed: &closed}, nil })
	s.get("plain", func() (any, error) { return "not a closer", nil })
	s.get("etcd", func() (any, error) {
		return &closer{name: "etcd", closed: &closed, err: errors.New("already gone")}, nil
	})
	s.close(slog.New(slog.NewTextHandler(&logs, nil)))
	if strings.Join(closed, ",") != "etcd,kube" {
		t.Errorf("closed %v, want etcd,kube (newest first)", closed)
	}
	if !strings.Contains(logs.String(), "already gone") {
		t.Errorf("the failed close is not logged: %q", logs.String())
	}
	s.close(slog.New(slog.NewTextHandler(&logs, nil)))
	if len(closed) != 2 {
		t.Errorf("closed twice: %v", closed)
	}
	if v, _ := s.get("kube", func() (any, error) { return "new", nil }); v != "new" {
		t.Errorf("a value kept after close: %v", v)
	}
}
