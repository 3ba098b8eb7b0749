package plans_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
)

// kjFleetTargets is the shipped fleet of eight tenants.
const kjFleetTargets = "fleets/kamaji-tenants.yaml"

// kjFleetName is the fleet's default name: the plan's and the targets file's.
const kjFleetName = "kamaji-datastore-migration-kamaji-tenants"

// TestKamajiFleet moves eight tenants (eight tenant API servers on loopback, each under its own
// prefix of the default etcd) to the dedicated datastore with the shipped fleet: one tenant,
// then two, then the rest three at a time. tenant-05 is not Ready, so its run fails its
// precheck: the failure budget (0) stops new starts, tenants of the last wave that had not
// started are skipped, and the journals show never more than three runs at once and no wave
// before the one before it ended. With tenant-05 Ready again, the same command takes the fleet up
// again, one at a time: the five tenants already moved are skipped, the other three are moved;
// paused meanwhile, the fleet starts none until it is resumed.
func TestKamajiFleet(t *testing.T) {
	e := startKamajiBase(t)
	ctx := t.Context()
	file, err := filepath.Abs(kjFleetTargets)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "kubeconfigs"), 0o755); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 8)
	for i := range names {
		names[i] = fmt.Sprintf("tenant-%02d", i)
		cp := e.addTenant(t, names[i], filepath.Join(e.dir, "kubeconfigs", names[i]+".kubeconfig"))
		cs := kubernetes.NewForConfigOrDie(cp.Config)
		for k := range 20 {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("config-%02d", k), Namespace: "default"}, Data: map[string]string{"tenant": names[i]}}
			if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.ctrl = startStandIn(t, e)
	setReady := func(name, status string) {
		tcp, err := e.mdyn.Resource(tcpGVR).Namespace(kjNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(tcp.Object, status, "status", "kubernetesResources", "version", "status"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.mdyn.Resource(tcpGVR).Namespace(kjNamespace).UpdateStatus(ctx, tcp, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setReady("tenant-05", "Upgrading")

	plan, _ := filepath.Abs(kjPlan)
	args := []string{"apply", plan, "--targets", file, "--kubeconfig", e.mgmt.Kubeconfig,
		"--set", "to=dedicated", "--set", "switchTimeout=2m",
		"--set", "fromEndpoints=[" + e.def.URL + "]", "--set", "toEndpoints=[" + e.dedicated.URL + "]",
		"--set", "toTLS={ca: {name: dedicated-certs, namespace: dedicated, keyPath: ca.crt}, cert: {name: dedicated-root-client-certs, namespace: dedicated, keyPath: tls.crt}, key: {name: dedicated-root-client-certs, namespace: dedicated, keyPath: tls.key}}"}
	r := e.run(t, nil, true, nil, args...)
	if r.Code != 1 || !strings.Contains(r.Stderr, "1 of 8 targets failed, more than the failure budget (0)") {
		t.Fatalf("the fleet with tenant-05 not Ready: exit %d\n%s", r.Code, r)
	}
	runID := func(name string) string { return kjFleetName + "." + name }
	journals := map[string]*engine.Journal{}
	for _, name := range names {
		if j := tryJournal(t, e.dir, runID(name)); j != nil {
			journals[name] = j
		}
	}
	// Waves of 1, 2, then the rest: tenant-03, 04 and 05 started together; 05's failure
	// stopped the rollout before 06 and 07.
	if len(journals) != 6 || journals["tenant-06"] != nil || journals["tenant-07"] != nil {
		t.Fatalf("runs of %v, want tenant-00 to tenant-05", keysOf(journals))
	}
	if j := journals["tenant-05"]; j.Status != engine.RunRolledBack || !strings.Contains(j.Error, "Ready tenant") {
		t.Errorf("tenant-05: %s %s, want its precheck to fail", j.Status, j.Error)
	}
	var all []*engine.Journal
	for _, j := range journals {
		all = append(all, j)
	}
	if most := plantest.MostAtOnce(all); most > 3 {
		t.Errorf("%d tenants ran at once, more than maxParallel 3", most)
	}
	finishedBy := func(ns ...string) time.Time {
		var end time.Time
		for _, n := range ns {
			if f := *journals[n].Finished; f.After(end) {
				end = f
			}
		}
		return end
	}
	startedFrom := func(ns ...string) time.Time {
		start := journals[ns[0]].Started
		for _, n := range ns {
			if s := journals[n].Started; s.Before(start) {
				start = s
			}
		}
		return start
	}
	if startedFrom("tenant-01", "tenant-02").Before(finishedBy("tenant-00")) || startedFrom("tenant-03", "tenant-04", "tenant-05").Before(finishedBy("tenant-01", "tenant-02")) {
		t.Errorf("a wave started before the one before it ended")
	}
	for i, name := range names {
		want := "dedicated"
		if i >= 5 {
			want = "default"
		}
		if got := tcpDataStore(t, e, name); got != want {
			t.Errorf("%s on %s after the first rollout, want %s", name, got, want)
		}
	}
	if !strings.Contains(r.Stdout, "wave 3 starts") || !strings.Contains(r.Stdout, "✖ tenant-05") {
		t.Errorf("fleet output:\n%s", r.Stdout)
	}

	// Fixed, and run again, one tenant at a time: only the three tenants left are run. Paused
	// from another terminal once the first of them started, the fleet starts no other until it
	// is resumed.
	setReady("tenant-05", "Ready")
	fleetCmd := func(verb string) error {
		cmd := exec.Command(planrunBin, "fleet", verb, kjFleetName, "--state-dir", filepath.Join(e.dir, "runs"))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("planrun fleet %s: %v: %s", verb, err, out)
		}
		return nil
	}
	var pauseErr error
	startedWhilePaused := -1
	paused := make(chan struct{})
	var once sync.Once
	r = e.run(t, nil, false, func(ev engine.Event) {
		if ev.Type != "target.started" {
			return
		}
		once.Do(func() {
			go func() {
				defer close(paused)
				if pauseErr = fleetCmd("pause"); pauseErr != nil {
					return
				}
				// tenant-05 runs on to its end; nothing starts after it while paused.
				for tryJournal(t, e.dir, runID("tenant-05")+".2") == nil || tryJournal(t, e.dir, runID("tenant-05")+".2").Finished == nil {
					time.Sleep(200 * time.Millisecond)
				}
				time.Sleep(3 * time.Second)
				startedWhilePaused = 0
				for _, n := range []string{"tenant-06", "tenant-07"} {
					if tryJournal(t, e.dir, runID(n)) != nil {
						startedWhilePaused++
					}
				}
				pauseErr = fleetCmd("resume")
			}()
		})
	}, append(args, "--parallel", "1")...)
	<-paused
	if r.Code != 0 {
		t.Fatalf("the fleet run again: exit %d\n%s", r.Code, r)
	}
	if pauseErr != nil || startedWhilePaused != 0 {
		t.Errorf("pause and resume: %v; %d tenants started while paused", pauseErr, startedWhilePaused)
	}
	for _, name := range names[:5] {
		if j := tryJournal(t, e.dir, runID(name)); !j.Started.Equal(journals[name].Started) || strings.Contains(r.Stdout, `"type":"target.started","fleet":"`+kjFleetName+`","target":"`+name+`"`) {
			t.Errorf("%s was run again", name)
		}
	}
	for _, id := range []string{runID("tenant-05") + ".2", runID("tenant-06"), runID("tenant-07")} {
		if j := tryJournal(t, e.dir, id); j == nil || j.Status != engine.RunSucceeded {
			t.Errorf("run %s: %v", id, j)
		}
	}
	for _, name := range names {
		if got := tcpDataStore(t, e, name); got != "dedicated" {
			t.Errorf("%s on %s after the fleet was run again", name, got)
		}
		if moves, _ := e.ctrl.MovesOf(name); len(moves) != 1 {
			t.Errorf("%s moved %v, want once", name, moves)
		}
		cs := kubernetes.NewForConfigOrDie(e.tenants[name].Config)
		if list, err := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{}); err != nil || len(list.Items) < 20 {
			t.Errorf("%s on the dedicated datastore: %v", name, err)
		}
	}
	r = e.run(t, nil, true, nil, "fleet", "status", kjFleetName)
	if r.Code != 0 || !strings.Contains(r.Stdout, "8 succeeded") {
		t.Errorf("fleet status: exit %d\n%s", r.Code, r)
	}
}

// tcpDataStore is the datastore a TenantControlPlane's status says its tenant is on.
func tcpDataStore(t *testing.T, e *kjEnv, name string) string {
	tcp, err := e.mdyn.Resource(tcpGVR).Namespace(kjNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	on, _, _ := unstructured.NestedString(tcp.Object, "status", "storage", "dataStoreName")
	return on
}

// tryJournal is a run's journal, nil when there is none.
func tryJournal(t *testing.T, dir, id string) *engine.Journal {
	t.Helper()
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(context.Background(), id)
	if err != nil {
		return nil
	}
	return j
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
