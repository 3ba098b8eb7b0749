package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/incluster"
	"planrun.dev/planrun/internal/images"
	"planrun.dev/planrun/internal/version"
)

// inClusterFlags are apply's flags for running in the cluster, and rbac's.
type inClusterFlags struct {
	enabled        bool
	image          string
	clusterSecrets []string
	hostNetwork    bool
	detach         bool
	serviceAccount string
}

func (f *inClusterFlags) register(fs *pflag.FlagSet, forApply bool) {
	if forApply {
		fs.BoolVar(&f.enabled, "in-cluster", false, "run in the cluster of --state, as a Job that resumes the run when its pod dies; this terminal follows it (Ctrl-C detaches)")
		fs.StringVar(&f.image, "image", "", "planrun image of the in-cluster runner (default: the one of this planrun's version)")
		fs.BoolVar(&f.hostNetwork, "host-network", false, "run the in-cluster runner on its node's network, reaching the API server at the address of your kubeconfig (clusters whose pods cannot reach the kubernetes Service, or API servers and stores only nodes reach)")
		fs.StringVar(&f.serviceAccount, "service-account", "", "run the in-cluster runner as this existing ServiceAccount of the state namespace, with the access an admin gave it (see planrun rbac), instead of making one for the run")
		fs.BoolVar(&f.detach, "detach", false, "with --in-cluster: start the run and return (planrun status -w RUN follows it)")
	}
	fs.StringArrayVar(&f.clusterSecrets, "cluster-secret", nil, "CLUSTER=SECRET: the in-cluster runner reaches plan cluster CLUSTER with the kubeconfig in Secret SECRET (key kubeconfig) of the state namespace (repeatable)")
}

// secrets parses --cluster-secret.
func (f *inClusterFlags) secrets() (map[string]string, error) {
	out := map[string]string{}
	for _, s := range f.clusterSecrets {
		cluster, secret, ok := strings.Cut(s, "=")
		if !ok || cluster == "" || secret == "" {
			return nil, usagef("--cluster-secret %q: want CLUSTER=SECRET", s)
		}
		if _, dup := out[cluster]; dup {
			return nil, usagef("--cluster-secret %s: given twice", cluster)
		}
		out[cluster] = secret
	}
	return out, nil
}

// clusterStore is the store as a cluster store, or a usage error naming flag.
func (a *app) clusterStore(ctx context.Context, flag string) (*clusterstore.Store, error) {
	if !clusterstore.IsURL(a.stateName()) {
		return nil, usagef("%s keeps the run in a cluster: give --state k8s://CONTEXT/NAMESPACE", flag)
	}
	s, err := a.store(ctx)
	if err != nil {
		return nil, err
	}
	cs, _ := asCluster(s)
	return cs, nil
}

// applyInCluster submits a run and starts its runner Job, then follows it as a local run shows.
func applyInCluster(ctx context.Context, a *app, p *engine.Plan, jsonOut bool) error {
	if a.rf.dryRun {
		return usagef("--in-cluster with --dry-run: a dry run changes nothing, run it here")
	}
	store, err := a.clusterStore(ctx, "--in-cluster")
	if err != nil {
		return err
	}
	secrets, err := a.ic.secrets()
	if err != nil {
		return err
	}
	opts := incluster.Options{Image: a.ic.image, ClusterSecrets: secrets, HostNetwork: a.ic.hostNetwork,
		ServiceAccount: a.ic.serviceAccount, NoRollback: a.rf.noRollback, Verbose: a.verbose}
	if opts.Image == "" {
		opts.Image = images.PlanrunImageFor(version.Version)
	}
	if opts.HostNetwork {
		opts.APIServer = store.RESTConfig().Host
	}
	if opts.Artifacts, opts.ArtifactsSecret, err = a.runnerArtifacts(store); err != nil {
		return err
	}
	launch, err := incluster.Prepare(ctx, store, p, opts)
	if err != nil {
		return err
	}
	r := &engine.Runner{Store: store, Logger: a.logger}
	j, err := r.Submit(ctx, p, engine.ApplyOptions{RunID: a.rf.runID})
	if err != nil {
		return err
	}
	launched, err := launch.Start(ctx, j.RunID)
	if err != nil {
		return fmt.Errorf("run %s is submitted but its runner did not start: %w (planrun resume %s runs it here)", j.RunID, err, j.RunID)
	}
	state := a.stateName()
	if !jsonOut {
		fmt.Fprintf(a.stdout, "run %s submitted to %s: runner Job %s\n", j.RunID, state, launched.Job)
	}
	if a.ic.detach {
		if !jsonOut {
			fmt.Fprintf(a.stdout, "follow it with: planrun status -w %s --state %s\n", j.RunID, state)
		}
		return nil
	}
	err = watchRun(ctx, store, j.RunID, newRenderer(a.stdout, jsonOut), runnerComing(store, j.RunID))
	if errors.Is(err, engine.ErrInterrupted) && ctx.Err() != nil {
		fmt.Fprintf(a.stderr, "planrun: detached; run %s goes on in the cluster (planrun status -w %s --state %s)\n", j.RunID, j.RunID, state)
		return nil
	}
	if final := cleanUpRunner(ctx, a, store, j.RunID); final != nil {
		a.summary(final, jsonOut, err)
	}
	return err
}

// cleanUpRunner deletes what an in-cluster run's PlanRun cannot own (its runner's ClusterRole and
// binding) once the run is over for good: it succeeded or was rolled back. It returns the run's
// journal as it is now.
func cleanUpRunner(ctx context.Context, a *app, store engine.Store, runID string) *engine.Journal {
	ctx = context.WithoutCancel(ctx)
	final, _ := store.Load(ctx, runID)
	cs, ok := asCluster(store)
	if final == nil || !ok {
		return final
	}
	if st := final.Status; st == engine.RunSucceeded || st == engine.RunRolledBack {
		if err := incluster.Cleanup(ctx, cs, runID); err != nil {
			a.logger.Warn("cleaning up the runner's cluster roles", "err", err)
		}
	}
	return final
}

// runnerArtifacts is where an in-cluster runner uploads its steps' files, and the Secret of the
// state namespace with the keys (the runner may read that one only).
func (a *app) runnerArtifacts(store *clusterstore.Store) (url, secret string, err error) {
	if a.artifactCreds == "" {
		return a.artifacts, "", nil
	}
	ns, name, _ := strings.Cut(a.artifactCreds, "/")
	if ns != store.Namespace() {
		return "", "", usagef("--artifacts-credentials-from %s: an in-cluster runner reads Secrets of its own namespace, %s", a.artifactCreds, store.Namespace())
	}
	return a.artifacts, name, nil
}

// runnerComing says whether an in-cluster run's runner Job is still at work, for watchRun.
func runnerComing(store *clusterstore.Store, runID string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		st, err := incluster.Runner(ctx, store, runID)
		if apierrors.IsNotFound(err) {
			return false, nil // its Job is gone (deleted, or being made again): no runner comes
		}
		if err != nil {
			return false, err
		}
		if st.Failed != "" {
			return false, errors.New(st.Failed)
		}
		return st.Active, nil
	}
}

// runnerOf is runnerComing for a run that has a runner Job, nil for one that has none (it runs
// on some machine, or its Job is gone with it).
func runnerOf(ctx context.Context, store engine.Store, runID string) func(context.Context) (bool, error) {
	cs, ok := asCluster(store)
	if !ok {
		return nil
	}
	if _, err := incluster.Runner(ctx, cs, runID); err != nil {
		return nil
	}
	return runnerComing(cs, runID)
}
