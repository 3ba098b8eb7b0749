package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
)

// dsConfig is a test-only datastore type.
type dsConfig struct {
	Endpoints []string        `yaml:"endpoints" plan:"required"`
	Timeout   engine.Duration `yaml:"timeout"`
	Port      int             `yaml:"port"`
}

func (c *dsConfig) Validate() error {
	for _, e := range c.Endpoints {
		if e == "" {
			return errors.New("endpoints: must not be empty")
		}
	}
	return nil
}

// dsUser is a step that reports the datastore it names.
type dsUser struct {
	Datastore string `yaml:"datastore"`
}

func (s *dsUser) Run(_ context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	cfg, err := rc.Datastore(s.Datastore)
	if err != nil {
		return nil, err
	}
	c := cfg.(*dsConfig)
	return engine.Outputs{"endpoints": strings.Join(c.Endpoints, ","), "port": c.Port, "timeout": c.Timeout.String()}, nil
}

func init() {
	engine.RegisterDatastore(engine.DatastoreType{Name: "test.ds", Doc: "test datastore", New: func() any { return new(dsConfig) }})
	engine.RegisterDatastore(engine.DatastoreType{Name: "test.other", Doc: "another", New: func() any { return new(dsConfig) }})
	engine.Register(engine.StepType{Name: "test.dsuser", Doc: "test step", New: func() engine.Action { return new(dsUser) }})
}

func TestDatastoresReachSteps(t *testing.T) {
	f := newFixture(t)
	body := `params:
  host: {default: "10.0.0.1"}
datastores:
  old: {type: test.ds, endpoints: ["${{ params.host }}:2379", b], timeout: 5s, port: 7}
steps:
  - {id: s, type: test.dsuser, with: {datastore: old}}
  - {id: missing, type: test.dsuser, with: {datastore: nope}}
`
	j, err := f.apply(body, engine.ApplyOptions{})
	out := j.Step("s").Outputs
	if out["endpoints"] != "10.0.0.1:2379,b" || out["port"] != 7 || out["timeout"] != "5s" {
		t.Fatalf("outputs %v", out)
	}
	want := `step "missing" failed: datastore "nope" is not declared in the plan's datastores (old)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}
}

func TestDatastoreLoadErrors(t *testing.T) {
	const steps = "steps:\n  - {id: s, type: test.dsuser}\n"
	tests := []struct{ name, body, want string }{
		{"unknown field", "datastores:\n  a: {type: test.ds, endpoints: [x], tls: {}}\n" + steps,
			`plan.yaml:5:38: datastores.a: unknown field "tls"`},
		{"missing required", "datastores:\n  a: {type: test.ds}\n" + steps,
			`plan.yaml:5:6: datastores.a: missing required field "endpoints"`},
		{"wrong type", "datastores:\n  a: {type: test.ds, endpoints: [x], port: many}\n" + steps,
			`plan.yaml:5:44: datastores.a: expected an integer, got string "many"`},
		{"unknown type", "datastores:\n  a: {type: mysql, endpoints: [x]}\n" + steps,
			`plan.yaml:5:13: datastores.a: type: unknown datastore type "mysql"; one of `},
		{"type left out among several", "datastores:\n  a: {endpoints: [x]}\n" + steps,
			`plan.yaml:5:6: datastores.a: type: missing; one of `},
		{"not a mapping", "datastores:\n  a: [x]\n" + steps,
			`plan.yaml:5:6: datastores.a: want a mapping, got a list`},
		{"validate", "datastores:\n  a: {type: test.ds, endpoints: [\"\"]}\n" + steps,
			`plan.yaml:5:6: datastores.a: endpoints: must not be empty`},
		{"template of an unknown param", "datastores:\n  a: {type: test.ds, endpoints: [\"${{ params.nope }}\"]}\n" + steps,
			`plan.yaml:5:`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ltParse(tc.body)
			lines := ltErrors(t, err)
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) ||
				strings.Contains(tc.want, "one of") && !strings.Contains(lines[0], "test.ds, test.other") {
				t.Fatalf("errors %q\nwant one starting with %q", lines, tc.want)
			}
		})
	}
}

// planrun validate (SkipRequiredParams) checks a templated entry's shape without the required
// params it reads; zero values would make it invalid (an empty endpoint). With the values, or
// with a shape error, it is checked as usual.
func TestDatastoreWithoutRequiredParams(t *testing.T) {
	body := func(extra string) string {
		return "params:\n  host: {type: string, required: true}\ndatastores:\n  a: {type: test.ds, endpoints: [\"${{ params.host }}\"]" + extra + "}\nsteps:\n  - {id: s, type: test.dsuser}\n"
	}
	skip := engine.LoadOptions{SkipRequiredParams: true}
	if _, err := engine.Parse("plan.yaml", []byte(ltHeader+body("")), skip); err != nil {
		t.Errorf("validate without the required param: %v", err)
	}
	if _, err := engine.Parse("plan.yaml", []byte(ltHeader+body(", port: many")), skip); err == nil || !strings.Contains(err.Error(), `datastores.a: expected an integer, got string "many"`) {
		t.Errorf("shape error without the required param: %v", err)
	}
	_, err := engine.Parse("plan.yaml", []byte(ltHeader+body("")), engine.LoadOptions{SkipRequiredParams: true, Params: engine.ParamValues{Set: []string{"host="}}})
	if err == nil || !strings.Contains(err.Error(), "datastores.a: endpoints: must not be empty") {
		t.Errorf("with the param given empty: %v", err)
	}
}
