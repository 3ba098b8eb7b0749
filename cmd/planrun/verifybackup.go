package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

var verifyBackupCommand = &command{
	name:    "verify-backup",
	usage:   "LOCATION [--credentials-from NAMESPACE/NAME] [-o json]",
	summary: "Recheck every file of a backup (folder, file:///, s3://, gs://, azblob://) against its manifest (size, sha256, object count).",
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.StringVar(&a.credentialsFrom, "credentials-from", "", "Secret holding the location's credentials, as NAMESPACE/NAME (or NAME with -n NAMESPACE), read through --kubeconfig and --context (default: the provider's own chain: environment, profile, workload identity)")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 1 {
			return usagef("verify-backup takes one argument: the backup location (a folder or a URL)")
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		if err := storage.Check(args[0]); err != nil {
			return usagef("%v", err)
		}
		creds, err := a.locationCredentials(ctx)
		if err != nil {
			return err
		}
		loc, err := storage.Open(ctx, args[0], creds)
		if err != nil {
			return err
		}
		defer loc.Close()
		res, err := archive.Verify(ctx, loc, nil)
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSON(a.stdout, res)
		}
		fmt.Fprintf(a.stdout, "%s: ok (%d files, %d objects, %d bytes)\n", loc, res.Files, res.Objects, res.Bytes)
		return nil
	},
}

// locationCredentials reads the Secret --credentials-from names, on the cluster --kubeconfig and
// --context choose (as kubectl would: $KUBECONFIG, ~/.kube/config, the current context); nil
// without the flag, for the provider's default chain.
func (a *app) locationCredentials(ctx context.Context) (*storage.Credentials, error) {
	if a.credentialsFrom == "" {
		return nil, nil
	}
	ns, name, ok := strings.Cut(a.credentialsFrom, "/")
	if !ok {
		ns, name = a.namespace, a.credentialsFrom
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, usagef("--credentials-from %s: want NAMESPACE/NAME, or NAME with -n NAMESPACE", a.credentialsFrom)
	}
	cl, err := kube.NewClient("", &engine.Cluster{Kubeconfig: a.kubeconfig, Context: a.kubeContext})
	if err != nil {
		return nil, fmt.Errorf("--credentials-from: %w", err)
	}
	creds, err := (&storage.CredentialsFrom{Namespace: ns, Name: name}).ResolveWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("--credentials-from: %w", err)
	}
	return creds, nil
}
