package clusterstore

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// What other rooms need of a store to run its runs elsewhere (an in-cluster runner): where it
// is, a client of its cluster, and a PlanRun to own the objects made for a run.

// Group and Resource name PlanRuns in RBAC rules.
const (
	Group    = "planrun.dev"
	Resource = "planruns"
)

// LeaseResource names the run locks in RBAC rules (group coordination.k8s.io).
const LeaseResource = "leases"

// EventLogResource names the runs' event logs in RBAC rules (core group), and EventLogVerbs what
// a runner does with its run's: read it, make it, add to it.
const EventLogResource = "configmaps"

// EventLogVerbs are the verbs a runner needs on EventLogResource.
var EventLogVerbs = []string{"get", "create", "patch"}

// Namespace is the namespace the store keeps its runs in.
func (s *Store) Namespace() string { return s.namespace }

// LeaseDuration is how long a runner's lock lasts without renewal.
func (s *Store) LeaseDuration() time.Duration { return s.lease }

// RESTConfig is how the store reaches its cluster.
func (s *Store) RESTConfig() *rest.Config { return rest.CopyConfig(s.config) }

// OwnerReference makes objects made for a run (its runner Job, ServiceAccount) belong to the
// run's PlanRun: deleting the run deletes them.
func (s *Store) OwnerReference(ctx context.Context, runID string) (metav1.OwnerReference, error) {
	obj, err := s.get(ctx, runID)
	if err != nil {
		return metav1.OwnerReference{}, err
	}
	return metav1.OwnerReference{APIVersion: planRunGVR.GroupVersion().String(), Kind: "PlanRun",
		Name: obj.GetName(), UID: obj.GetUID(), BlockOwnerDeletion: ptr.To(false)}, nil
}
