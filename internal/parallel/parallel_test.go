package parallel

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestEachRunsAll(t *testing.T) {
	items := make([]int, 1000)
	for i := range items {
		items[i] = i + 1
	}
	var sum, running, peak atomic.Int64
	err := Each(context.Background(), 4, items, func(_ context.Context, i int) error {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		sum.Add(int64(i))
		running.Add(-1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Load() != 1000*1001/2 {
		t.Fatalf("sum %d", sum.Load())
	}
	if peak.Load() > 4 {
		t.Fatalf("%d calls at once, want at most 4", peak.Load())
	}
}

func TestEachFirstErrorCancels(t *testing.T) {
	boom := errors.New("boom")
	var started atomic.Int64
	err := Each(context.Background(), 2, make([]int, 100), func(ctx context.Context, _ int) error {
		if started.Add(1) == 1 {
			time.Sleep(10 * time.Millisecond)
			return boom
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return nil
		}
	})
	if err != boom {
		t.Fatalf("error %v, want boom", err)
	}
	if n := started.Load(); n > 2 {
		t.Fatalf("%d items started after the error", n)
	}
}

func TestEachCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var calls atomic.Int64
	err := Each(ctx, 3, make([]int, 100), func(context.Context, int) error { calls.Add(1); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if calls.Load() > 0 {
		t.Fatalf("%d calls on a cancelled context", calls.Load())
	}
}

func TestEachEmpty(t *testing.T) {
	if err := Each(context.Background(), 0, []int(nil), func(context.Context, int) error { return errors.New("called") }); err != nil {
		t.Fatal(err)
	}
}
