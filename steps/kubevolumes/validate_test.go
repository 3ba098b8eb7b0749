package kubevolumes_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kube/kubetest"
)

// TestBadInput: every mistake is found before anything is written: the step fails with one
// line saying what is wrong, and no mover pod, Secret or claim exists on either cluster.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	start := time.Now()
	// Source claims: Bound (to volumes of their own), one Pending (its class waits for a first
	// pod that never comes), one of a class the target lacks, one ReadWriteOncePod in use.
	e.boundClaim(src(), e.ns, "data", controlplane.LocalStorageClass)
	e.boundClaim(src(), e.ns, "fast", "fast")
	e.boundClaim(src(), e.ns, "exclusive", controlplane.LocalStorageClass, corev1.ReadWriteOncePod)
	pending := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "pending"}, Spec: claimSpec(controlplane.LocalStorageClass, "10Mi")}
	if _, err := src().CoreV1().PersistentVolumeClaims(e.ns).Create(ctx(), pending, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	user := e.podUsing(src(), e.ns, "exclusive-user", "exclusive", "sleep 3600")
	waitPod(t, src(), e.ns, user, corev1.PodRunning)
	// On the target: a claim "busy" in use by a running app pod.
	e.boundClaim(src(), e.ns, "busy", controlplane.LocalStorageClass)
	e.boundClaim(dst(), e.ns, "busy", controlplane.LocalStorageClass)
	app := e.podUsing(dst(), e.ns, "app-0", "busy", "sleep 3600")
	waitPod(t, dst(), e.ns, app, corev1.PodRunning)
	t.Logf("claims and pods set up in %s", time.Since(start).Round(time.Millisecond))

	if _, err := src().CoreV1().Secrets(e.ns).Create(ctx(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pw"}, StringData: map[string]string{"other": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	closed := strings.Replace(e.repo, e.s3.Endpoint, "http://127.0.0.1:1", 1)
	step := func(with string) string {
		return clustersHeader + fmt.Sprintf("steps:\n  - {id: s, type: kube.copyVolumes, with: {from: source, to: target, namespaces: [%s], %s}}\n", e.ns, with)
	}
	creds := fmt.Sprintf("credentialsFrom: {cluster: source, namespace: %s, name: %s}", e.ns, credsSecret)
	good := fmt.Sprintf("repository: %q, %s, hostNetwork: true", e.repo, creds)
	cases := []kubetest.ErrorCase{
		{Name: "claim missing", Plan: step(good + ", claims: [data, nope]"),
			Want: fmt.Sprintf("claim %s/nope on cluster source not found", e.ns)},
		{Name: "claim not Bound", Plan: step(good + ", claims: [pending]"),
			Want: fmt.Sprintf("claim %s/pending on cluster source is Pending, not Bound", e.ns)},
		{Name: "storage class missing on the target", Plan: step(good + ", claims: [fast]"),
			Want: fmt.Sprintf("storage class fast of claim %s/fast not found on cluster target (map it to one of the target's with storageClassMapping)", e.ns)},
		{Name: "mapped storage class missing on the target", Plan: step(good + ", claims: [data], storageClassMapping: {local: gold}"),
			Want: fmt.Sprintf("storage class gold of claim %s/data not found on cluster target (storageClassMapping maps local to it)", e.ns)},
		{Name: "target claim missing, createClaims false", Plan: step(good + ", claims: [data], createClaims: false"),
			Want: fmt.Sprintf("claim %s/data on cluster target not found, and createClaims is false", e.ns)},
		{Name: "target claim in use", Plan: step(good + ", claims: [busy]"),
			Want: fmt.Sprintf("claim %s/busy on cluster target is in use by pod app-0 (Running): the mover writes only into a claim the app does not use yet", e.ns)},
		{Name: "ReadWriteOncePod claim in use", Plan: step(good + ", claims: [exclusive]"),
			Want: fmt.Sprintf("claim %s/exclusive on cluster source is ReadWriteOncePod and mounted by pod exclusive-user", e.ns)},
		{Name: "target namespace missing", Plan: step(good + fmt.Sprintf(", claims: [data], namespaceMapping: {%s: nowhere}", e.ns)),
			Want: "namespace nowhere on cluster target not found"},
		{Name: "several problems on one line", Plan: step(good + ", claims: [nope, pending]"),
			Want: fmt.Sprintf("claim %s/nope on cluster source not found; claim %s/pending on cluster source is Pending, not Bound", e.ns, e.ns)},
		{Name: "repository unreachable", Plan: step(fmt.Sprintf("repository: %q, %s, claims: [data]", closed, creds)),
			Want: "repository: s3://volumes/repo/" + e.ns + "?endpoint=http://127.0.0.1:1"},
		{Name: "bucket missing", Plan: step(fmt.Sprintf("repository: %q, %s, claims: [data]", e.s3.URL("nobucket", "x"), creds)),
			Want: "bucket does not exist"},
		{Name: "credentials Secret missing", Plan: step(fmt.Sprintf("repository: %q, credentialsFrom: {cluster: source, namespace: %s, name: nope}, claims: [data]", e.repo, e.ns)),
			Want: fmt.Sprintf("credentialsFrom: Secret %s/nope on cluster source not found", e.ns)},
		{Name: "password key missing", Plan: step(good + fmt.Sprintf(", claims: [data], passwordFrom: {cluster: source, namespace: %s, name: pw, key: password}", e.ns)),
			Want: fmt.Sprintf("passwordFrom: key password of Secret %s/pw on cluster source: no such key, or empty (keys: other)", e.ns)},
		{Name: "service account missing", Plan: step(good + ", claims: [data], serviceAccount: mover"),
			Want: fmt.Sprintf("service account %s/mover on cluster source not found (serviceAccount)", e.ns)},
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			start := time.Now()
			run := kubetest.Apply(t, both(), tc.Plan, kubetest.Options{})
			kubetest.WantRunError(t, run, `step "s" failed: `, tc.Want)
			t.Logf("%s: %v", time.Since(start).Round(time.Millisecond), run.Err)
			e.nothingLeft()
			if got := claimNames(t, dst(), e.ns); strings.Join(got, ",") != "busy" {
				t.Errorf("claims on the target: %v, want only busy", got)
			}
		})
	}
}

// TestBadConfig: mistakes in the step's own fields are load errors.
func TestBadConfig(t *testing.T) {
	for _, tc := range []struct{ name, with, want string }{
		{"namespace listed twice", `namespaces: [a, a], repository: "s3://b/p"`, "namespaces: a is listed twice"},
		{"copy onto itself", `to: source, namespaces: [a], repository: "s3://b/p"`, "namespaces: a would be copied onto itself"},
		{"two namespaces onto one", `namespaces: [a, b], namespaceMapping: {a: c, b: c}, repository: "s3://b/p"`, "both map to c"},
		{"mapping of another namespace", `namespaces: [a], namespaceMapping: {x: y}, repository: "s3://b/p"`, "namespaceMapping: x is not one of namespaces"},
		{"claim in another namespace", `namespaces: [a], claims: [b/data], repository: "s3://b/p"`, "claims: b/data: namespace b is not one of namespaces"},
		{"bad selector", `namespaces: [a], selector: "a in (", repository: "s3://b/p"`, "selector:"},
		{"half a credentials Secret", `namespaces: [a], repository: "s3://b/p", credentialsFrom: {name: x}`, "credentialsFrom: give both namespace and name"},
		{"password without key", `namespaces: [a], repository: "s3://b/p", passwordFrom: {namespace: a, name: b}`, "key"},
		{"local repository", `namespaces: [a], repository: /tmp/repo`, "repository: /tmp/repo is a local path; the mover pods run on the clusters' nodes and need an object store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			with := tc.with
			if !strings.Contains(with, "to:") {
				with = "to: target, " + with
			}
			_, err := plantest.Load(t, clustersHeader+"steps:\n  - {id: s, type: kube.copyVolumes, with: {from: source, "+with+"}}\n", plantest.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
