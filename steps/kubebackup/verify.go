package kubebackup

import (
	"context"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/archive"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.verifyBackup",
		Doc:  "Recheck every file of a backup folder against its manifest (size, sha256, object count).",
		New:  func() engine.Action { return new(VerifyBackup) },
	})
}

// VerifyBackup rechecks a backup folder; its error names every damaged file.
type VerifyBackup struct {
	Dir string `yaml:"dir" plan:"required" doc:"Backup folder, as written by kube.backup."`
}

var (
	_ engine.Action    = (*VerifyBackup)(nil)
	_ engine.Describer = (*VerifyBackup)(nil)
)

// Describe implements engine.Describer.
func (v *VerifyBackup) Describe() string { return "verify the backup in " + v.Dir }

// Run implements engine.Action.
func (v *VerifyBackup) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	// In a dry run, the backup a backup step of the run would have written.
	res, err := archive.Verify(archive.ReadFolder(rc, v.Dir), func(done, total int64) {
		rc.Progress(engine.Progress{Done: done, Total: total, Unit: "bytes"})
	})
	if err != nil {
		return nil, err
	}
	return engine.Outputs{"dir": v.Dir, "files": res.Files, "objects": res.Objects, "bytes": res.Bytes}, nil
}
