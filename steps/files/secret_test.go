package files

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/kube/kubetest"
)

// A copy between two S3 servers with different keys, each side's credentials read from a
// Secret (Gardener's key names on one side, the AWS CLI's on the other) while the environment
// holds wrong ones. No secret key appears in the run's journal, step log, outputs, events or
// errors.
func TestCopyCredentialsFromSecrets(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	a := s3test.StartForTest(t)
	b := s3test.StartForTest(t)
	bucket(t, a, "src")
	bucket(t, b, "dst")
	objs := mixed()
	put(t, a.Client(), "src", objs)
	t.Setenv("AWS_ACCESS_KEY_ID", "WRONGWRONGWRONGWRONG")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	t.Setenv("AWS_REGION", s3test.Region)
	for name, data := range map[string]map[string]string{
		"seed-a": {"accessKeyID": a.AccessKey, "secretAccessKey": a.SecretKey},
		"seed-b": {"aws_access_key_id": b.AccessKey, "aws_secret_access_key": b.SecretKey + "\n"},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: data}
		if _, err := c.Typed.CoreV1().Secrets(ns).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	var events strings.Builder
	body := fmt.Sprintf(`steps:
  - id: s
    type: files.copy
    with:
      from: %q
      to: %q
      fromCredentials: {namespace: %s, name: seed-a}
      toCredentials: {namespace: %s, name: seed-b}
`, a.URL("src", ""), b.URL("dst", "entry"), ns, ns)
	r := kubetest.Apply(t, map[string]*kubetest.Cluster{"main": c}, body, kubetest.Options{Dir: dir, NoRollback: true, Timeout: 2 * time.Minute})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	out := r.Outputs(t, "s")
	counts(t, out, int64(len(objs)), int64(len(objs)), 0)
	sameObjects(t, objects(t, b.Client(), "dst", "entry/"), objs, true)

	// A failing run too: its error and checkpoint must not hold a secret either.
	body = strings.Replace(body, "name: seed-b", "name: seed-a", 1) // a's keys on b: refused
	failed := kubetest.Apply(t, map[string]*kubetest.Cluster{"main": c}, strings.Replace(body, `"entry"`, `"other"`, 1), kubetest.Options{Dir: filepath.Join(dir, "failed"), NoRollback: true})
	if failed.Err == nil {
		t.Fatal("a copy with the wrong Secret succeeded")
	}
	t.Logf("the failing run: %v", failed.Err)
	fmt.Fprintf(&events, "%v\n%v\n%v\n", failed.Err, r.Progress, failed.Progress)
	plantest.NoSecrets(t, dir, events.String(), a.SecretKey, b.SecretKey)
}
