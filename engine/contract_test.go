package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
)

// contract is a test step that records the order in which the engine calls it: Run must see
// the state Provision derived, and Validate must see it too.
type contract struct {
	Word string `yaml:"word"`

	upper string
	calls []string
}

var (
	_ engine.Provisioner = (*contract)(nil)
	_ engine.Validator   = (*contract)(nil)
	_ engine.Undoer      = (*contract)(nil)
)

var errProvision = errors.New("word: cannot provision")

func (c *contract) Provision() error {
	c.calls = append(c.calls, "provision")
	if c.Word == "unprovisionable" {
		return errProvision
	}
	c.upper = strings.ToUpper(c.Word)
	return nil
}

func (c *contract) Validate() error {
	c.calls = append(c.calls, "validate")
	if c.upper == "" {
		return errors.New("word: validated before it was provisioned")
	}
	if c.upper == "BAD" {
		return errors.New("word: must not be bad")
	}
	return nil
}

func (c *contract) Run(_ context.Context, _ *engine.RunContext) (engine.Outputs, error) {
	return engine.Outputs{"upper": c.upper, "calls": strings.Join(c.calls, ",")}, nil
}

var undoneUpper []string

func (c *contract) Undo(_ context.Context, _ *engine.RunContext, _ engine.Outputs) error {
	undoneUpper = append(undoneUpper, c.upper+":"+strings.Join(c.calls, ","))
	return nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.contract", Doc: "test step", New: func() engine.Action { return new(contract) }})
}

func TestStepContractOrder(t *testing.T) {
	for _, tc := range []struct {
		name, with string
	}{
		{"literal config, provisioned at load time", `{word: hello}`},
		{"templated config, provisioned at run time", `{word: "${{ params.w }}"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			undoneUpper = nil
			j, err := f.apply(`
params:
  w: {type: string, default: hello}
steps:
  - {id: s, type: test.contract, with: `+tc.with+`}
  - {id: boom, type: test.op, with: {always: true}}
`, engine.ApplyOptions{})
			var re *engine.RunError
			if !errors.As(err, &re) || re.Status != engine.RunRolledBack {
				t.Fatalf("want rolled back, got %v", err)
			}
			out := j.Step("s").Outputs
			if out["upper"] != "HELLO" || out["calls"] != "provision,validate" {
				t.Fatalf("outputs %v, want upper HELLO after provision,validate", out)
			}
			if len(undoneUpper) != 1 || undoneUpper[0] != "HELLO:provision,validate" {
				t.Fatalf("undo saw %v", undoneUpper)
			}
		})
	}
}

func TestStepContractErrors(t *testing.T) {
	for _, tc := range []struct {
		name, with string
		loadErr    string // a literal config fails at load time, with its position
		runErr     string // a templated one fails the step
		is         error
	}{
		{"validate at load", `{word: bad}`, `plan.yaml:9:40: step "s": with: word: must not be bad`, "", nil},
		{"provision at load", `{word: unprovisionable}`, `plan.yaml:9:40: step "s": with: word: cannot provision`, "", nil},
		{"validate at run", `{word: "${{ params.w }}"}`, "", `with: word: must not be bad`, nil},
		{"provision at run", `{word: "${{ params.u }}"}`, "", `with: word: cannot provision`, errProvision},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			path := writePlan(t, f.dir, `
params:
  w: {type: string, default: bad}
  u: {type: string, default: unprovisionable}
steps:
  - {id: s, type: test.contract, with: `+tc.with+`}
`)
			p, err := engine.Load(path, engine.LoadOptions{})
			if tc.loadErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.loadErr) {
					t.Fatalf("load: got %v, want %q", err, tc.loadErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.runner.Apply(context.Background(), p, engine.ApplyOptions{RunID: "r"})
			if err == nil || !strings.Contains(err.Error(), tc.runErr) {
				t.Fatalf("run: got %v, want %q", err, tc.runErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("run: %v does not match %v", err, tc.is)
			}
		})
	}
}
