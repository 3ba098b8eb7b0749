package etcd_test

import (
	"context"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/etcd"
)

// connectStep connects to a datastore and keeps the client it got, for the test to inspect.
type connectStep struct {
	Datastore string `yaml:"datastore"`
}

var _ engine.Action = (*connectStep)(nil)

var (
	gotMu sync.Mutex
	got   []*clientv3.Client
)

func (s *connectStep) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	cli, _, err := etcd.Connect(ctx, rc, s.Datastore)
	if err != nil {
		return nil, err
	}
	if _, err := cli.Get(ctx, "/any"); err != nil {
		return nil, err
	}
	gotMu.Lock()
	got = append(got, cli)
	gotMu.Unlock()
	return engine.Outputs{}, nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.etcdconnect", Doc: "test step", New: func() engine.Action { return new(connectStep) }})
}

// A run's etcd client is shared by its steps and closed when the run ends; the next run of the
// same plan in the same process gets a client of its own.
func TestClientsAreRunScoped(t *testing.T) {
	e := controlplane.StartEtcdForTest(t)
	body := `datastores:
  main: {type: etcd, endpoints: [` + e.URL + `]}
steps:
  - {id: a, type: test.etcdconnect, with: {datastore: main}}
  - {id: b, type: test.etcdconnect, with: {datastore: main}}
`
	got = nil
	for i := range 2 {
		run := plantest.Apply(t, body, plantest.Options{})
		if run.Err != nil {
			t.Fatal(run.Err)
		}
		if len(got) != 2*(i+1) {
			t.Fatalf("run %d: %d clients", i, len(got))
		}
		a, b := got[2*i], got[2*i+1]
		if a != b {
			t.Fatalf("run %d: the steps got different clients", i)
		}
		if a.Ctx().Err() == nil {
			t.Fatalf("run %d: client still open after the run", i)
		}
	}
	if got[0] == got[2] {
		t.Fatal("two runs shared one client")
	}
}
