// Package memprobe measures the peak memory of a piece of work in a benchmark: the Go heap,
// sampled every few milliseconds, and the process's peak resident set (Linux VmHWM, reset before
// the work), so that benchmarks can show memory that stays flat as inputs grow.
package memprobe

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Peak is the highest memory seen during a Start/stop interval, in bytes; RSS is 0 where the
// system does not say.
type Peak struct {
	// Heap is the heap in use, garbage not yet collected included: with the default GOGC it
	// may reach twice the live heap.
	Heap uint64
	// Live is the heap the garbage collector found reachable, at the end of each cycle: what
	// the work holds.
	Live uint64
	RSS  uint64
}

// Max is the larger of p and o, field by field.
func (p Peak) Max(o Peak) Peak {
	return Peak{Heap: max(p.Heap, o.Heap), Live: max(p.Live, o.Live), RSS: max(p.RSS, o.RSS)}
}

// Start frees what it can, resets the peak RSS and starts sampling the heap; the returned
// function stops and returns the peaks.
func Start() func() Peak {
	debug.FreeOSMemory()
	resetPeakRSS()
	runtime.GC()
	stop, done := make(chan struct{}), make(chan Peak)
	go func() {
		var ms runtime.MemStats
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak Peak
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			metrics.Read(live)
			peak.Heap = max(peak.Heap, ms.HeapInuse)
			if live[0].Value.Kind() == metrics.KindUint64 {
				peak.Live = max(peak.Live, live[0].Value.Uint64())
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() Peak {
		close(stop)
		p := <-done
		p.RSS = readPeakRSS()
		return p
	}
}

// resetPeakRSS resets the process's VmHWM (Linux; a no-op elsewhere).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// readPeakRSS returns VmHWM in bytes, or 0 when unknown.
func readPeakRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
