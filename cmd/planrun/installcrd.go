package main

import (
	"context"

	"planrun.dev/planrun/clusterstore"
)

var installCRDCommand = &command{
	name:     "install-crd",
	usage:    "",
	summary:  "Print the PlanRun CustomResourceDefinition that --state k8s://… keeps runs in (planrun install-crd | kubectl apply -f -).",
	complete: completeNone,
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 0 {
			return usagef("install-crd takes no arguments")
		}
		_, err := a.stdout.Write(clusterstore.CRD())
		return err
	},
}
