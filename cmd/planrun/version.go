package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"planrun.dev/planrun/internal/version"
)

var versionCommand = &command{
	name:     "version",
	usage:    "[-o json]",
	summary:  "Print planrun's version, the commit it was built from and its Go version.",
	complete: completeNone,
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 0 {
			return usagef("version takes no arguments")
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		info := version.Get()
		if jsonOut {
			return writeJSON(a.stdout, info)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 1, ' ', 0)
		fmt.Fprintf(tw, "Version:\t%s\n", info.Version)
		fmt.Fprintf(tw, "Commit:\t%s\n", info.Commit)
		fmt.Fprintf(tw, "Go:\t%s\n", info.GoVersion)
		return tw.Flush()
	},
}
