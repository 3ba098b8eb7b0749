package main

import (
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/s3test"
)

// TestArtifactsUploaded: with runs kept in a cluster, --artifacts uploads each step's files
// (exec's stdout.log and stderr.log) to object storage under RUN/STEP/ once the step ended, with
// the keys of a Secret; --artifacts is refused for a local state folder, which keeps them.
func TestArtifactsUploaded(t *testing.T) {
	cp := controlplane.StartForTest(t)
	srv := s3test.StartForTest(t)
	if err := srv.CreateBucket("logs"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := t.Context()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "runs"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("runs").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "log-keys"},
		StringData: map[string]string{"accessKeyID": srv.AccessKey, "secretAccessKey": srv.SecretKey}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plan := writePlan(t, dir, "plan.yaml", `apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: logs}
steps:
  - {id: say, type: exec, with: {command: [sh, -c, "echo hello from the step; echo warned >&2"]}}
`)
	state := "k8s://" + cp.ContextName + "/runs"
	code, stdout, stderr := runCLI(t, "apply", plan, "--run-id", "logged", "--state", state, "--kubeconfig", cp.Kubeconfig,
		"--artifacts", srv.URL("logs", "planrun"), "--artifacts-credentials-from", "runs/log-keys")
	if code != exitOK {
		t.Fatalf("apply: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for key, want := range map[string]string{"planrun/logged/say/stdout.log": "hello from the step", "planrun/logged/say/stderr.log": "warned"} {
		out, err := srv.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("logs"), Key: aws.String(key)})
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		body, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("%s holds %q, want %q", key, body, want)
		}
	}
	// planrun logs reads them there, from any machine.
	code, stdout, stderr = runCLI(t, "logs", "logged", "--state", state, "--kubeconfig", cp.Kubeconfig,
		"--artifacts", srv.URL("logs", "planrun"), "--artifacts-credentials-from", "runs/log-keys")
	if code != exitOK || !strings.Contains(stdout, "hello from the step") || !strings.Contains(stdout, "warned") {
		t.Errorf("logs from the bucket: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "apply", plan, "--state-dir", dir, "--artifacts", srv.URL("logs", "planrun"))
	if code != exitUsage || !strings.Contains(stderr, "--artifacts: for runs kept in a cluster") {
		t.Errorf("--artifacts with a local folder: exit %d: %s", code, stderr)
	}
}
