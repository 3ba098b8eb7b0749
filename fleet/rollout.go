package fleet

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"
)

// Rollout says how a fleet's targets are started.
type Rollout struct {
	// MaxParallel is how many targets run at once, at most (default 1).
	MaxParallel int `json:"maxParallel,omitempty"`
	// Waves are the sizes of the waves in order: a wave starts once the one before it finished,
	// the budget allows and the gate holds. The last size repeats until every target is in a
	// wave; none is one wave of the whole fleet.
	Waves []Size `json:"-"`
	// WaveSizes are Waves as written, for the record.
	WaveSizes []string `json:"waves,omitempty"`
	// FailureBudget is how many failed targets are tolerated (a count, or a percentage of the
	// fleet rounded down): one more and no new target starts. Default 0: the first failure
	// stops the rollout.
	FailureBudget *Size `json:"-"`
	// Budget is FailureBudget as written.
	Budget string `json:"failureBudget,omitempty"`
	// Gate is an expression that must hold before each wave after the first, over the targets
	// finished so far: succeeded, failed, finished, running, total (counts), wave (the number of
	// the wave about to start) and runs (name, status, error and params of each finished target).
	Gate string `json:"gate,omitempty"`
}

func parseRollout(n *yaml.Node, at func(*yaml.Node) string) (Rollout, error) {
	var r Rollout
	if n.Kind != yaml.MappingNode {
		return r, fmt.Errorf("%s: rollout must be a mapping (maxParallel, waves, failureBudget, gate)", at(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "maxParallel":
			p, err := strconv.Atoi(v.Value)
			if v.Kind != yaml.ScalarNode || err != nil || p < 1 {
				return r, fmt.Errorf("%s: maxParallel: want a number of at least 1", at(v))
			}
			r.MaxParallel = p
		case "waves":
			if v.Kind != yaml.SequenceNode {
				return r, fmt.Errorf("%s: waves: want a list of sizes such as [1, 5, 25%%]", at(v))
			}
			var sizes []string
			for _, w := range v.Content {
				sizes = append(sizes, w.Value)
			}
			if err := r.SetWaves(sizes); err != nil {
				return r, fmt.Errorf("%s: waves: %v", at(v), err)
			}
		case "failureBudget":
			if err := r.SetBudget(v.Value); err != nil {
				return r, fmt.Errorf("%s: failureBudget: %v", at(v), err)
			}
		case "gate":
			if _, err := compileGate(v.Value); err != nil {
				return r, fmt.Errorf("%s: gate: %v", at(v), err)
			}
			r.Gate = v.Value
		default:
			return r, fmt.Errorf("%s: unknown field %q in rollout (known: maxParallel, waves, failureBudget, gate)", at(k), k.Value)
		}
	}
	return r, nil
}

// SetWaves sets the wave sizes from their written form.
func (r *Rollout) SetWaves(sizes []string) error {
	r.Waves, r.WaveSizes = nil, nil
	for _, s := range sizes {
		size, err := ParseSize(s)
		if err != nil {
			return err
		}
		if size.N == 0 {
			return fmt.Errorf("%q: a wave has at least one target", s)
		}
		r.Waves = append(r.Waves, size)
		r.WaveSizes = append(r.WaveSizes, size.String())
	}
	return nil
}

// SetBudget sets the failure budget from its written form.
func (r *Rollout) SetBudget(s string) error {
	size, err := ParseSize(s)
	if err != nil {
		return err
	}
	r.FailureBudget, r.Budget = &size, size.String()
	return nil
}

// Override sets what other has set.
func (r *Rollout) Override(other Rollout) {
	if other.MaxParallel > 0 {
		r.MaxParallel = other.MaxParallel
	}
	if other.Waves != nil {
		r.Waves, r.WaveSizes = other.Waves, other.WaveSizes
	}
	if other.FailureBudget != nil {
		r.FailureBudget, r.Budget = other.FailureBudget, other.Budget
	}
	if other.Gate != "" {
		r.Gate = other.Gate
	}
}

// restore decodes the written forms kept in a record.
func (r *Rollout) restore() error {
	if err := r.SetWaves(r.WaveSizes); err != nil {
		return err
	}
	if r.Budget != "" {
		return r.SetBudget(r.Budget)
	}
	return nil
}

// waveOf assigns each of total targets, in order, to its wave (0-based).
func (r Rollout) waveOf(total int) []int {
	out := make([]int, total)
	wave, filled := 0, 0
	for i := range out {
		size := total
		if len(r.Waves) > 0 {
			size = r.Waves[min(wave, len(r.Waves)-1)].Of(total)
		}
		if filled == size {
			wave, filled = wave+1, 0
		}
		out[i] = wave
		filled++
	}
	return out
}

// tolerated is how many failures the budget tolerates in a fleet of total.
func (r Rollout) tolerated(total int) int {
	if r.FailureBudget == nil {
		return 0
	}
	if r.FailureBudget.Percent {
		return r.FailureBudget.N * total / 100
	}
	return r.FailureBudget.N
}

// GateVars are what a gate expression sees.
type GateVars struct {
	Succeeded int       `expr:"succeeded"`
	Failed    int       `expr:"failed"`
	Finished  int       `expr:"finished"`
	Running   int       `expr:"running"`
	Total     int       `expr:"total"`
	Wave      int       `expr:"wave"`
	Runs      []GateRun `expr:"runs"`
}

// GateRun is a finished target as a gate sees it.
type GateRun struct {
	Name   string         `expr:"name"`
	Status string         `expr:"status"`
	Error  string         `expr:"error"`
	Params map[string]any `expr:"params"`
}

// CheckGate says whether src is a gate expression.
func CheckGate(src string) error {
	_, err := compileGate(src)
	return err
}

func compileGate(src string) (*vm.Program, error) {
	prog, err := expr.Compile(src, expr.Env(GateVars{}), expr.AsBool())
	if err != nil {
		// expr-lang draws the place under the source on more lines; the first says it.
		line, _, _ := strings.Cut(err.Error(), "\n")
		return nil, errors.New(line)
	}
	return prog, nil
}

// gateHolds evaluates the gate; an empty gate holds.
func gateHolds(src string, vars GateVars) (bool, error) {
	if src == "" {
		return true, nil
	}
	prog, err := compileGate(src)
	if err != nil {
		return false, err
	}
	out, err := expr.Run(prog, vars)
	if err != nil {
		return false, err
	}
	return out.(bool), nil
}
