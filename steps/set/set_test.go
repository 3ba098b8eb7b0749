package set_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	_ "planrun.dev/planrun/steps/assert"
	_ "planrun.dev/planrun/steps/set"
)

func TestSet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		with    string
		then    string // an assert over the outputs, run after the step
		dryRun  bool
		want    string // outputs as JSON
		wantErr string
	}{
		{name: "values from params", with: `{values: {url: "${{ 's3://' + params.bucket + '/x' }}", n: "${{ params.n * 2 }}", plain: text}}`,
			then: `steps.s.outputs.url == "s3://b1/x" && steps.s.outputs.n == 4`, want: `{"n":4,"plain":"text","url":"s3://b1/x"}`},
		{name: "maps and null", with: `{values: {creds: "${{ params.n > 1 ? {namespace: 'garden', name: params.bucket} : nil }}", none: "${{ params.n > 5 ? {a: 1} : {} }}"}}`,
			then: `steps.s.outputs.creds.name == "b1" && len(steps.s.outputs.none) == 0`, want: `{"creds":{"name":"b1","namespace":"garden"},"none":{}}`},
		{name: "dry run", with: `{values: {a: 1}}`, dryRun: true, then: `steps.s.outputs.a == 1`, want: `{"a":1}`},
		{name: "no values", with: `{values: {}}`, wantErr: `values: name at least one value`},
		{name: "bad name", with: `{values: {"a.b": 1}}`, wantErr: `"a.b" is not a name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := "params:\n  n: {type: int, default: 2}\n  bucket: {type: string, default: b1}\nsteps:\n  - {id: s, type: set, with: " + tc.with + "}\n"
			if tc.then != "" {
				body += "  - {id: then, type: assert, with: {that: '" + tc.then + "'}}\n"
			}
			p, err := plantest.Load(t, body, plantest.Options{})
			if tc.wantErr != "" {
				plantest.WantError(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := &engine.Runner{Store: engine.NewDirStore(filepath.Join(t.TempDir(), "runs"))}
			j, err := r.Apply(context.Background(), p, engine.ApplyOptions{RunID: "r", DryRun: tc.dryRun})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(j.Step("s").Outputs)
			if string(got) != tc.want {
				t.Fatalf("outputs %s, want %s", got, tc.want)
			}
		})
	}
}
