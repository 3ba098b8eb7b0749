// Package parallel runs a function over a list of items through a fixed number of workers.
package parallel

import (
	"context"
	"sync"
)

// Each runs fn over items, n at a time (at least one), in the order of items. The first error
// cancels the context given to the other calls, no item is started after it, and Each returns
// it once the calls under way have returned. Without an error it returns ctx's error, if ctx
// ended before every item was started.
func Each[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan T)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := 0; i < max(n, 1) && i < len(items); i++ {
		wg.Go(func() {
			for it := range ch {
				if ctx.Err() != nil {
					continue // drain: the items left are not run
				}
				if err := fn(ctx, it); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
loop:
	for _, it := range items {
		select {
		case ch <- it:
		case <-ctx.Done():
			break loop
		}
	}
	close(ch)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
