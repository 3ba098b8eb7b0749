package plantest

import (
	"sort"
	"time"

	"planrun.dev/planrun/engine"
)

// MostAtOnce is the largest number of the finished runs whose [started, finished] overlap: how
// many ran at once at most, as their journals tell it (fleet tests check maxParallel with it).
func MostAtOnce(journals []*engine.Journal) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, j := range journals {
		if j.Finished == nil {
			continue
		}
		edges = append(edges, edge{j.Started, 1}, edge{*j.Finished, -1})
	}
	sort.Slice(edges, func(i, k int) bool {
		if edges[i].at.Equal(edges[k].at) {
			return edges[i].delta < edges[k].delta // an end at the same instant comes first
		}
		return edges[i].at.Before(edges[k].at)
	})
	most, now := 0, 0
	for _, e := range edges {
		now += e.delta
		most = max(most, now)
	}
	return most
}
