package schemas_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/schemas"
	_ "planrun.dev/planrun/steps" // registers every step type
)

var update = flag.Bool("update", false, "rewrite plan.schema.json from the Go types")

// TestSchemaUpToDate keeps plan.schema.json in sync with the engine's and the step types' Go types.
func TestSchemaUpToDate(t *testing.T) {
	got, err := engine.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("plan.schema.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(got, schemas.Plan) {
		t.Fatal("schemas/plan.schema.json is stale: run go test ./schemas -update")
	}
}

func TestSchemaDeterministic(t *testing.T) {
	a, err := engine.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		b, err := engine.JSONSchema()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatal("JSONSchema is not deterministic")
		}
	}
	if !bytes.HasSuffix(a, []byte("}\n")) || !bytes.HasPrefix(a, []byte("{\n  \"")) {
		t.Fatal("JSONSchema: want an object indented with two spaces, ending in a newline")
	}
}

// compile compiles the schema generated from the Go types (TestSchemaUpToDate checks that the
// committed file is the same).
func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	data, err := engine.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(engine.SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(engine.SchemaID)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// yamlToJSON turns a YAML document into the value a JSON Schema validator expects.
func yamlToJSON(data []byte) (any, error) {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	b, err := json.Marshal(jsonValue(v))
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

func jsonValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = jsonValue(x)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = jsonValue(x)
		}
		return m
	case []any:
		for i, x := range v {
			v[i] = jsonValue(x)
		}
		return v
	}
	return v
}

// TestPlanFilesValid checks the example and test plans against the schema.
func TestPlanFilesValid(t *testing.T) {
	var files []string
	for _, dir := range []string{"../plans", "../testdata/plans"} {
		m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			if !strings.Contains(filepath.Base(f), "invalid") {
				files = append(files, f)
			}
		}
	}
	if len(files) == 0 {
		t.Skip("no plan files under ../plans or ../testdata/plans")
	}
	sch := compile(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			v, err := yamlToJSON(data)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := sch.Validate(v); err != nil {
				t.Errorf("%s does not match the schema:\n%v", f, err)
			}
		})
	}
}

// TestSchemaInline checks small plans against the schema, and that the loader agrees.
func TestSchemaInline(t *testing.T) {
	const head = `apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: demo, version: 1}
`
	tests := []struct {
		name  string
		plan  string
		valid bool
		want  string // in the schema's error, for an invalid plan
	}{
		{"valid", head + `params:
  ns: {type: string, default: apps, description: Namespace to move.}
  replicas: {type: int, default: 2}
  flags: {type: map, default: {a: 1}}
clusters:
  source: {context: old, description: where the apps run now}
  target: {}
hooks:
  PreBackup:
    - {id: notify, type: exec, with: {command: [echo, starting]}}
steps:
  - id: count
    type: exec
    description: Count the things.
    phase: Backup
    timeout: 1m30s
    onError: continue
    retry: {attempts: 3, backoff: 500ms, maxBackoff: 1m, on: any}
    with:
      command: [sh, -c, 'echo "{\"items\": 3}"', "${{ params.ns }}"]
      env: {NS: "${{ params.ns }}", STATIC: x}
      dir: /tmp
      stdin: hello
      timeout: 10s
      dryRun: true
    rollback:
      - {id: undo-count, type: exec, with: {command: [echo, undo]}}
  - id: check
    type: assert
    when: params.replicas > 1
    with:
      that: steps.count.outputs.items > 0
      message: "no items in ${{ params.ns }}"
`, true, ""},
		{"unknown top-level field", head + `extra: 1
steps:
  - {id: a, type: exec, with: {command: [echo]}}
`, false, "additional properties 'extra'"},
		{"unknown field in exec with", head + `steps:
  - {id: a, type: exec, with: {command: [echo], shell: bash}}
`, false, "at '/steps/0/with': additional properties 'shell'"},
		{"wrong type", head + `steps:
  - id: a
    type: exec
    retry: {attempts: "x"}
    with: {command: [echo]}
`, false, "at '/steps/0/retry/attempts': got string, want integer"},
		{"template for a duration", head + `params:
  t: {type: string, default: 5s}
steps:
  - id: a
    type: exec
    with:
      command: [sleep, "1"]
      timeout: ${{ params.t }}
`, true, ""},
		{"template for a list and a bool", head + `params:
  cmd: {type: list, default: [echo, hi]}
  dry: {type: bool, default: false}
steps:
  - {id: a, type: exec, with: {command: "${{ params.cmd }}", dryRun: "${{ params.dry }}"}}
`, true, ""},
		{"unknown step type", head + `steps:
  - {id: a, type: nope}
`, false, "at '/steps/0/type'"},
		{"missing required field of with", head + `steps:
  - {id: a, type: exec}
`, false, "missing property 'with'"},
		{"field of another step type", head + `steps:
  - {id: a, type: assert, with: {that: "true", command: [x]}}
`, false, "additional properties 'command'"},
		{"bad duration", head + `steps:
  - {id: a, type: exec, timeout: soon, with: {command: [echo]}}
`, false, "at '/steps/0/timeout'"},
		{"bad enum", head + `steps:
  - {id: a, type: exec, onError: ignore, with: {command: [echo]}}
`, false, "at '/steps/0/onError'"},
		{"wrong apiVersion", strings.Replace(head, "v1alpha1", "v1", 1) + `steps:
  - {id: a, type: exec, with: {command: [echo]}}
`, false, "at '/apiVersion'"},
		{"no steps", head + `steps: []
`, false, "at '/steps'"},
		{"missing metadata", `apiVersion: planrun.dev/v1alpha1
kind: Plan
steps:
  - {id: a, type: exec, with: {command: [echo]}}
`, false, "missing property 'metadata'"},
	}
	sch := compile(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := yamlToJSON([]byte(tt.plan))
			if err != nil {
				t.Fatal(err)
			}
			err = sch.Validate(v)
			if tt.valid && err != nil {
				t.Errorf("schema rejects a valid plan:\n%v", err)
			}
			if !tt.valid && err == nil {
				t.Error("schema accepts an invalid plan")
			}
			if !tt.valid && err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("schema rejects the plan, but not for the expected reason (want %q):\n%v", tt.want, err)
			}
			_, loadErr := engine.Parse("plan.yaml", []byte(tt.plan), engine.LoadOptions{SkipRequiredParams: true})
			if tt.valid && loadErr != nil {
				t.Errorf("the loader rejects a plan the test calls valid: %v", loadErr)
			}
			if !tt.valid && loadErr == nil {
				t.Error("the loader accepts a plan the test calls invalid")
			}
		})
	}
}
