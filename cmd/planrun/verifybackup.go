package main

import (
	"context"
	"fmt"

	"planrun.dev/planrun/steps/kube/archive"
)

var verifyBackupCommand = &command{
	name:    "verify-backup",
	usage:   "DIR [-o json]",
	summary: "Recheck every file of a backup folder against its manifest (size, sha256, object count).",
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 1 {
			return usagef("verify-backup takes one argument: the backup folder")
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		res, err := archive.Verify(args[0], nil)
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSON(a.stdout, res)
		}
		fmt.Fprintf(a.stdout, "%s: ok (%d files, %d objects, %d bytes)\n", args[0], res.Files, res.Objects, res.Bytes)
		return nil
	},
}
