package kubevolumes

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// cluster is one of the plan's clusters as the steps use it: its plan name and a typed client
// (pod logs are not reachable through the dynamic client).
type cluster struct {
	name string
	cs   kubernetes.Interface
}

// connect returns the run's shared typed client of a plan cluster.
func connect(rc *engine.RunContext, name string) (*cluster, error) {
	c, err := kube.ClusterRef{Cluster: name}.Client(rc)
	if err != nil {
		return nil, err
	}
	v, err := rc.Shared("kube.typed/"+c.Name, func() (any, error) { return kubernetes.NewForConfig(c.Config) })
	if err != nil {
		return nil, err
	}
	return &cluster{name: c.Name, cs: v.(kubernetes.Interface)}, nil
}

// String names the cluster in messages: "cluster source".
func (c *cluster) String() string {
	if c.name == "" {
		return "the default cluster"
	}
	return "cluster " + c.name
}

// uid is the cluster's identity: the UID of its kube-system namespace, which no cluster
// shares and which lives as long as the cluster.
func (c *cluster) uid(ctx context.Context) (string, error) {
	ns, err := c.cs.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: reading the identity of the cluster (namespace kube-system): %w", c, kube.Classify(err))
	}
	return string(ns.UID), nil
}
