package plans_test

// Helpers shared by the end-to-end tests of the shipped plans: the planrun binary built once,
// running it as a process (events, SIGKILL at a chosen event), reading its journal.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"planrun.dev/planrun/engine"
)

// planrunBin is the planrun binary, built once for the tests that run plans as a process.
var planrunBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "planrun-plans-bin-")
	if err != nil {
		panic(err)
	}
	planrunBin = filepath.Join(dir, "planrun")
	if out, err := exec.Command("go", "build", "-o", planrunBin, "../cmd/planrun").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building planrun: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// applyFile creates the objects of a YAML file (CRDs and admission objects).
func applyFile(t *testing.T, dyn dynamic.Interface, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		gv, _ := schema.ParseGroupVersion(u.GetAPIVersion())
		res := map[string]string{"CustomResourceDefinition": "customresourcedefinitions", "ValidatingAdmissionPolicy": "validatingadmissionpolicies", "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}[u.GetKind()]
		if _, err := dyn.Resource(gv.WithResource(res)).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// killAt says when to SIGKILL planrun: at the first event of a type for a step (with minDone,
// the first progress event that far), after a delay.
type killAt struct {
	event   engine.EventType
	step    string
	minDone int64
	delay   time.Duration
}

type result struct {
	code   int
	killed bool
	events []engine.Event
	stdout string
	stderr string
}

func (r result) String() string {
	var b strings.Builder
	for _, e := range r.events {
		if e.Error != "" || e.Type == engine.EventRunFinished {
			fmt.Fprintf(&b, "event %s %s %s: %s\n", e.Type, e.StepID, e.Status, e.Error)
		}
	}
	if len(r.events) == 0 {
		b.WriteString("stdout: " + r.stdout + "\n")
	}
	return b.String() + "stderr: " + r.stderr
}

// runPlanrun runs planrun in dir with its state in dir/runs (with -o json unless plain), calls
// onEvent (if set) with every event as it comes, and kills planrun at k if set.
func runPlanrun(t *testing.T, dir string, k *killAt, plain bool, onEvent func(engine.Event), args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	args = append(args, "--state-dir", filepath.Join(dir, "runs"))
	if !plain {
		args = append(args, "-o", "json")
	}
	cmd := exec.CommandContext(ctx, planrunBin, args...)
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr, out strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var r result
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if plain {
			continue
		}
		var ev engine.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Errorf("not an event: %q", sc.Text())
			continue
		}
		r.events = append(r.events, ev)
		if onEvent != nil {
			onEvent(ev)
		}
		if k != nil && !r.killed && ev.Type == k.event && ev.StepID == k.step && (k.minDone == 0 || ev.Progress != nil && ev.Progress.Done >= k.minDone) {
			time.Sleep(k.delay)
			if cmd.Process.Signal(syscall.SIGKILL) == nil {
				r.killed = true
			}
		}
	}
	err = cmd.Wait()
	r.stdout, r.stderr = out.String(), stderr.String()
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); !(ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL) {
			r.killed = false
		}
	} else if err != nil {
		t.Fatal(err)
	} else {
		r.killed = false
	}
	return r
}

// loadJournal reads the journal of run id from dir/runs.
func loadJournal(t *testing.T, dir, id string) *engine.Journal {
	t.Helper()
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// normalized is the JSON form of v, for comparisons that ignore Go types.
func normalized(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
