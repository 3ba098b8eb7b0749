package kubebackup

import (
	"context"
	"fmt"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.verifyBackup",
		Doc:  "Recheck every file of a backup (folder or bucket prefix) against its manifest (size, sha256, object count).",
		New:  func() engine.Action { return new(VerifyBackup) },
	})
}

// VerifyBackup rechecks a backup; its error names every damaged file.
type VerifyBackup struct {
	Dir             string                   `yaml:"dir" plan:"required" doc:"Backup location, as written by kube.backup: a folder (plain path or file:///path) or a bucket prefix (s3://, gs://, azblob://)."`
	CredentialsFrom *storage.CredentialsFrom `yaml:"credentialsFrom" doc:"Secret with the credentials of dir (default: the provider's own chain: environment, profile, workload identity)."`
}

var (
	_ engine.Action     = (*VerifyBackup)(nil)
	_ engine.Validator  = (*VerifyBackup)(nil)
	_ engine.Describer  = (*VerifyBackup)(nil)
	_ kube.AccessNeeder = (*VerifyBackup)(nil)
)

// Access implements kube.AccessNeeder:
//   - get on the Secret credentialsFrom names, on its cluster (the backup itself is not on a cluster).
func (v *VerifyBackup) Access() []kube.Rule { return v.CredentialsFrom.Access() }

// Validate implements engine.Validator.
func (v *VerifyBackup) Validate() error {
	if err := storage.Check(v.Dir); err != nil {
		return fmt.Errorf("dir: %w", err)
	}
	if err := v.CredentialsFrom.Check(); err != nil {
		return fmt.Errorf("credentialsFrom: %w", err)
	}
	return nil
}

// Describe implements engine.Describer.
func (v *VerifyBackup) Describe() string { return "verify the backup in " + storage.Display(v.Dir) }

// Run implements engine.Action.
func (v *VerifyBackup) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	// In a dry run, the backup a backup step of the run would have written.
	loc, ok := archive.DryRunWritten(rc, v.Dir)
	if !ok {
		var err error
		if loc, err = storage.OpenFor(ctx, rc, v.Dir, v.CredentialsFrom); err != nil {
			return nil, fmt.Errorf("dir: %w", err)
		}
	}
	res, err := archive.Verify(ctx, loc, func(done, total int64) {
		rc.Progress(engine.Progress{Done: done, Total: total, Unit: "bytes"})
	})
	if err != nil {
		return nil, err
	}
	return engine.Outputs{"dir": loc.String(), "files": res.Files, "objects": res.Objects, "bytes": res.Bytes}, nil
}
