package engine

import "fmt"

// readableBy returns, for a step, which steps its `when` and ${{ }} may read: those that have
// run by the time it runs. Reading a later step used to load, then evaluate to nil or silently
// skip at run time.
//
//   - A main or hook step reads the main and hook steps before it in the execution order
//     (hooks run around their phase: Plan.order has them where they run).
//   - A rollback step of X runs when the run rolls back, after X: it reads what ran up to and
//     including X, and the rollback steps of X before it. It may read the status of any main
//     or hook step (every one has a record by then: Pending if it never ran), which is how a
//     rollback step tells how far the run got; not its outputs.
//   - No step reads another step's rollback steps: whether they ran depends on how far the
//     run got.
func (p *Plan) readableBy() func(s *Step) func(id string, statusOnly bool) (bool, string) {
	rank := make(map[string]int, len(p.order)) // position in the execution order
	for i, s := range p.order {
		rank[s.ID] = i
	}
	sibling := map[string]int{} // position in the parent's rollback block
	for _, s := range p.order {
		for i, r := range s.Rollback {
			if r != nil {
				sibling[r.ID] = i
			}
		}
	}
	return func(s *Step) func(id string, statusOnly bool) (bool, string) {
		reader, ok := rank[s.ID]
		if s.Parent != nil {
			reader, ok = rank[s.Parent.ID]
			reader++ // the step it undoes has run
		}
		if !ok {
			return nil // a step outside the order (an orphan hook), reported already
		}
		return func(id string, statusOnly bool) (bool, string) {
			t := p.byID[id]
			if t == nil {
				return true, "" // unknown: reported as such
			}
			if t.Parent != nil {
				if s.Parent == t.Parent && sibling[t.ID] < sibling[s.ID] {
					return true, ""
				}
				return false, fmt.Sprintf("is a rollback step of %q, which runs only when the run is rolled back", t.Parent.ID)
			}
			r, ok := rank[id]
			if !ok || r < reader || s.Parent != nil && statusOnly {
				return true, ""
			}
			if t.Hook != "" {
				return false, fmt.Sprintf("is a %s hook, which runs later", t.Hook)
			}
			return false, "runs later"
		}
	}
}
