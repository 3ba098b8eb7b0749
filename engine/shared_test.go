package engine

import (
	"errors"
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
