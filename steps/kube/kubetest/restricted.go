package kubetest

import (
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"planrun.dev/planrun/internal/controlplane"
)

// Restricted is c seen by a user without rights: a kubeconfig whose credentials impersonate
// user (in groups, if any), who is only system:authenticated (discovery works, everything else
// is forbidden). Tests use it for the "forbidden" error of a step.
func (c *Cluster) Restricted(t testing.TB, user string, groups ...string) *Cluster {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(c.CP.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range kc.AuthInfos {
		ai.Impersonate, ai.ImpersonateGroups = user, groups
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return &Cluster{CP: &controlplane.ControlPlane{Kubeconfig: path, ContextName: c.CP.ContextName}}
}
