package fleet

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Target is one member of a fleet: a name and the params its run gets.
type Target struct {
	Name string `json:"name"`
	// Params is the target's mapping of param values, as written (the plan's types check it
	// when the target's run loads the plan).
	Params *yaml.Node `json:"-"`
	// ParamValues are the same values, decoded, for the record.
	ParamValues map[string]any `json:"params,omitempty"`
	// Pos is where the target is written.
	Pos string `json:"-"`
}

// File is a targets file: the targets, and the rollout when the file sets it.
type File struct {
	Path    string
	Targets []Target
	Rollout Rollout
}

// maxTargetsFile bounds a targets file.
const maxTargetsFile = 4 << 20

// maxTargets bounds a fleet: every target is a run with its own journal.
const maxTargets = 10000

// ReadFile reads a targets file: either a list of targets, or a mapping with targets: and an
// optional rollout:. A target is {name: NAME, params: {...}}. Every mistake is an error at its
// place, FILE:LINE:COL.
func ReadFile(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("targets file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("targets file %s: not a regular file", path)
	}
	if st.Size() > maxTargetsFile {
		return nil, fmt.Errorf("targets file %s: %d bytes, more than %d", path, st.Size(), maxTargetsFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("targets file: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a targets file's bytes.
func Parse(path string, data []byte) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: no targets", path)
	}
	f := &File{Path: path}
	at := func(n *yaml.Node) string { return fmt.Sprintf("%s:%d:%d", path, n.Line, n.Column) }
	root := doc.Content[0]
	list := root
	if root.Kind == yaml.MappingNode {
		list = nil
		for i := 0; i+1 < len(root.Content); i += 2 {
			k, v := root.Content[i], root.Content[i+1]
			switch k.Value {
			case "targets":
				list = v
			case "rollout":
				r, err := parseRollout(v, at)
				if err != nil {
					return nil, err
				}
				f.Rollout = r
			default:
				return nil, fmt.Errorf("%s: unknown field %q (known: targets, rollout)", at(k), k.Value)
			}
		}
		if list == nil {
			return nil, fmt.Errorf("%s: no targets: field", at(root))
		}
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s: targets must be a list of {name, params}", at(list))
	}
	if len(list.Content) == 0 {
		return nil, fmt.Errorf("%s: no targets", at(list))
	}
	if len(list.Content) > maxTargets {
		return nil, fmt.Errorf("%s: %d targets, more than %d", at(list), len(list.Content), maxTargets)
	}
	seen := map[string]string{}
	for _, n := range list.Content {
		t, err := parseTarget(n, at)
		if err != nil {
			return nil, err
		}
		if first, dup := seen[t.Name]; dup {
			return nil, fmt.Errorf("%s: target %q is already listed at %s", t.Pos, t.Name, first)
		}
		seen[t.Name] = t.Pos
		f.Targets = append(f.Targets, t)
	}
	return f, nil
}

func parseTarget(n *yaml.Node, at func(*yaml.Node) string) (Target, error) {
	if n.Kind != yaml.MappingNode {
		return Target{}, fmt.Errorf("%s: a target must be a mapping {name: NAME, params: {...}}", at(n))
	}
	t := Target{Pos: at(n)}
	var name *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "name":
			name = v
		case "params":
			if v.Kind != yaml.MappingNode {
				return Target{}, fmt.Errorf("%s: params must be a mapping of param names to values", at(v))
			}
			t.Params = v
			if err := v.Decode(&t.ParamValues); err != nil {
				return Target{}, fmt.Errorf("%s: params: %v", at(v), err)
			}
		default:
			return Target{}, fmt.Errorf("%s: unknown field %q in a target (known: name, params)", at(k), k.Value)
		}
	}
	if name == nil || name.Kind != yaml.ScalarNode || name.Value == "" {
		return Target{}, fmt.Errorf("%s: a target needs a name", at(n))
	}
	// A target's name names its run (FLEET-NAME): a PlanRun, a Lease, a Job.
	if errs := validation.IsDNS1123Label(name.Value); len(errs) > 0 {
		return Target{}, fmt.Errorf("%s: target name %q: %s", at(name), name.Value, strings.Join(errs, "; "))
	}
	t.Name = name.Value
	return t, nil
}

// Size is a number of targets, or a percentage of the fleet ("25%").
type Size struct {
	N       int
	Percent bool
}

func (s Size) String() string {
	if s.Percent {
		return strconv.Itoa(s.N) + "%"
	}
	return strconv.Itoa(s.N)
}

// Of is the size in targets of a fleet of total: a percentage rounds up, so that it is never 0.
func (s Size) Of(total int) int {
	if !s.Percent {
		return s.N
	}
	return (s.N*total + 99) / 100
}

// ParseSize parses "5" or "25%".
func ParseSize(v string) (Size, error) {
	num, pct := strings.CutSuffix(strings.TrimSpace(v), "%")
	n, err := strconv.Atoi(num)
	switch {
	case err != nil:
		return Size{}, fmt.Errorf("%q: want a number or a percentage such as 25%%", v)
	case pct && (n < 1 || n > 100):
		return Size{}, fmt.Errorf("%q: a percentage is 1%% to 100%%", v)
	case !pct && n < 0:
		return Size{}, fmt.Errorf("%q: must not be negative", v)
	}
	return Size{N: n, Percent: pct}, nil
}
