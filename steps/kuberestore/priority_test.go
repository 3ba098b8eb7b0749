package kuberestore

import (
	"slices"
	"testing"
)

// Priority hands out a copy: a caller changing it changes no other restore's order.
func TestPriorityIsACopy(t *testing.T) {
	p := Priority()
	if len(p) == 0 || p[0] != "storageclasses.storage.k8s.io" {
		t.Fatalf("priority %v", p)
	}
	p[0] = "changed"
	if q := Priority(); q[0] != "storageclasses.storage.k8s.io" || !slices.Equal(q[1:], p[1:]) {
		t.Fatalf("Priority changed to %v", q)
	}
}
