package engine_test

import (
	"context"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
)

// ltRefs is a test step type naming a cluster and a datastore, as kube and etcd steps do.
type ltRefs struct {
	Cluster string            `yaml:"cluster" plan:"cluster"`
	Store   string            `yaml:"store" plan:"datastore"`
	Labels  map[string]string `yaml:"labels"`
	Extra   any               `yaml:"extra"`
}

func (*ltRefs) Run(context.Context, *engine.RunContext) (engine.Outputs, error) {
	return engine.Outputs{}, nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.refs", Doc: "test step naming a cluster and a datastore", New: func() engine.Action { return new(ltRefs) }})
}

// TestLoadTimeChecks: each check that used to pass validate and fail (or silently skip) at run
// time, with the file:line:col of the fault. Plan bodies start on line 4.
func TestLoadTimeChecks(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{
			name: "when reads a later step",
			body: `steps:
  - {id: a, type: test.op, when: 'steps.b.status == "Succeeded"'}
  - {id: b, type: test.op}
`,
			want: `plan.yaml:5:35: step "b" runs later: its status and outputs are not known here`,
		},
		{
			name: "template reads a later step",
			body: `steps:
  - {id: a, type: test.refs, with: {labels: {x: "${{ steps.b.outputs.n }}"}}}
  - {id: b, type: test.op}
`,
			want: `plan.yaml:5:53: step "a": with: step "b" runs later: its status and outputs are not known here`,
		},
		{
			name: "main step reads a rollback step",
			body: `steps:
  - {id: a, type: test.op, rollback: [{id: undo, type: test.op}]}
  - {id: b, type: test.op, when: 'steps.undo.status == "Succeeded"'}
`,
			want: `plan.yaml:6:35: step "undo" is a rollback step of "a", which runs only when the run is rolled back: its status and outputs are not known here`,
		},
		{
			name: "rollback step reads outputs of a later step",
			body: `steps:
  - {id: a, type: test.op, rollback: [{id: undo, type: test.op, when: 'steps.b.outputs.n > 1'}]}
  - {id: b, type: test.op}
`,
			want: `plan.yaml:5:72: step "b" runs later`,
		},
		{
			name: "hook reads a later hook",
			body: `hooks:
  PreBackup: [{id: pre, type: test.op, when: 'steps.post.status == "Succeeded"'}]
  PostBackup: [{id: post, type: test.op}]
steps:
  - {id: a, type: test.op, phase: Backup}
`,
			want: `plan.yaml:5:47: step "post" is a PostBackup hook, which runs later`,
		},
		{
			name: "datastore reads a step",
			body: `datastores:
  main: {type: test.ds, endpoints: ["${{ steps.a.outputs.url }}"]}
steps:
  - {id: a, type: test.op}
`,
			want: `plan.yaml:5:41: datastores.main: step "a" is read by a datastore, which is set up before any step runs`,
		},
		{
			name: "undeclared cluster",
			body: `clusters: {main: {}, target: {}}
steps:
  - {id: a, type: test.refs, with: {cluster: tagret}}
`,
			want: `plan.yaml:6:46: cluster "tagret" is not one of the plan's clusters (main, target)`,
		},
		{
			name: "datastore without datastores",
			body: `steps:
  - id: a
    type: test.refs
    with:
      store: old
`,
			want: `plan.yaml:8:14: datastore "old": the plan declares no datastores (add it under datastores:)`,
		},
		{
			name: "template as a map key",
			body: `steps:
  - {id: a, type: test.refs, with: {labels: {"${{ params.x }}": v}}}
`,
			want: `plan.yaml:5:46: step "a": with: ${{ }} in a mapping key is not filled in`,
		},
		{
			name: "template as a free-form key",
			body: `steps:
  - {id: a, type: test.refs, with: {extra: {k: {"${{ 1 }}": v}}}}
`,
			want: `plan.yaml:5:49: step "a": with: ${{ }} in a mapping key is not filled in`,
		},
		{
			name: "second document",
			body: `steps: [{id: a, type: test.op}]
---
steps: [{id: b, type: test.op}]
`,
			want: `plan.yaml:5:1: a second YAML document starts here; a plan holds one document`,
		},
		{
			name: "required param with a default",
			body: `params: {n: {type: int, required: true, default: 3}}
steps: [{id: a, type: test.op}]
`,
			want: `plan.yaml:4:50: param "n" is required and has a default`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ltParse(tt.body)
			lines := ltErrors(t, err)
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tt.want) {
				t.Errorf("errors:\n  %s\nwant one starting with:\n  %s", strings.Join(lines, "\n  "), tt.want)
			}
		})
	}
}

// TestLoadTimeChecksAllow: what the checks must not refuse.
func TestLoadTimeChecksAllow(t *testing.T) {
	for name, body := range map[string]string{
		"earlier steps and hooks": `hooks:
  PreBackup: [{id: pre, type: test.op, when: 'steps.a.status == "Succeeded"'}]
  PostBackup: [{id: post, type: test.op, when: 'steps.pre.status == "Succeeded" && steps.b.status == "Succeeded"'}]
steps:
  - {id: a, type: test.op}
  - {id: b, type: test.op, phase: Backup, when: 'steps.pre.status == "Succeeded"'}
  - {id: c, type: test.op, when: 'steps.post.status == "Succeeded"'}
`,
		"rollback reads its step, earlier steps and earlier siblings": `steps:
  - {id: a, type: test.op}
  - id: b
    type: test.op
    rollback:
      - {id: u1, type: test.op, when: 'steps.a.status == "Succeeded" && steps.b.status == "Succeeded"'}
      - {id: u2, type: test.op, when: 'steps.u1.status == "Succeeded"'}
`,
		"rollback reads the status of a later step (how far the run got)": `steps:
  - {id: a, type: test.op, rollback: [{id: undo, type: test.op, when: 'steps.b.status == "Pending"'}]}
  - {id: b, type: test.op}
`,
		"declared and templated names": `params: {c: {type: string, default: main}}
clusters: {main: {}}
steps:
  - {id: a, type: test.refs, with: {cluster: main}}
  - {id: b, type: test.refs, with: {cluster: "${{ params.c }}"}}
`,
		"a file ending with a bare document marker": "steps: [{id: a, type: test.op}]\n---\n",
	} {
		if _, err := ltParse(body); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
