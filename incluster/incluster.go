// Package incluster runs a run of a plan in the cluster that keeps it, instead of on the
// operator's machine: a Job runs `planrun runner RUN` in the planrun image, as a ServiceAccount
// allowed what the plan's steps need, and the Job's next pod resumes the run from its journal when
// one dies (its Lease expires, the next runner takes it over). The operator's planrun submits the
// run, launches the Job and follows the journal.
//
// Its door is Launch (with Check before it and Cleanup after the run), plus PlanAccess and NewRBAC
// for `planrun rbac`.
package incluster

import "planrun.dev/planrun/steps/kube"

const (
	managedByLabel = "app.kubernetes.io/managed-by"
	// runLabel marks every object made for a run whose id fits a label value, cluster-scoped
	// ones included (which its PlanRun cannot own); they are named ObjectName(RUN) in any case.
	runLabel = "planrun.dev/run"
	// stepsAnnotation lists the steps whose needs a ClusterRole grants, for review.
	stepsAnnotation = "planrun.dev/steps"
	// clusterAnnotation names the plan cluster a ClusterRole is for.
	clusterAnnotation = "planrun.dev/cluster"
)

// ObjectName names the objects of a run's runner (Job, ServiceAccount, roles):
// planrun-RUN-runner, cut and hashed as step objects are when the run id is long.
func ObjectName(runID string) string { return kube.ObjectNameFor("planrun-", runID, "runner") }
