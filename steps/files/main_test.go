package files

import (
	"testing"

	"planrun.dev/planrun/steps/kube/kubetest"
)

// clusters holds one control plane: credentials given as Secrets (fromCredentials,
// toCredentials) are read from it.
var clusters []*kubetest.Cluster

func TestMain(m *testing.M) { kubetest.Main(m, 1, &clusters) }
