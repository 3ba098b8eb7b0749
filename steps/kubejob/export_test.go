package kubejob

import (
	"context"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/client-go/kubernetes"
)

// KeepLogs is keepLogs for the tests, which run it on pods of a complete cluster: the log files
// kept and how the last failed pod ended.
func KeepLogs(ctx context.Context, cs kubernetes.Interface, job *batchv1.Job, dir string) ([]string, string, error) {
	k, err := keepLogs(ctx, cs, job, dir)
	return k.files, k.lastFailure, err
}
