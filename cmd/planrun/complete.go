package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// completeFunc proposes the argument being typed (toComplete) after args: what a TAB press
// offers. It answers quietly: on a failure it returns ShellCompDirectiveError and nothing else,
// never a message among the proposals.
type completeFunc func(ctx context.Context, a *app, args []string, toComplete string) ([]string, cobra.ShellCompDirective)

// completionTimeout bounds a completion: a TAB press must not hang on a cluster that does not
// answer (--state k8s://…).
const completionTimeout = 5 * time.Second

// completeArg runs a command's completion as cobra's __complete calls it: the flags typed before
// the TAB are parsed into a (--state-dir, --state, --kubeconfig), log lines go nowhere (the
// shell reads stdout only, and kubectl may show stderr), and time is bounded.
func (a *app) completeArg(complete completeFunc, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	a.stderr = io.Discard
	a.setup()
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	return complete(ctx, a, args, toComplete)
}

// completeRunIDs completes a command's first argument, a run id, from the runs of --state or
// --state-dir, each with its status and plan; later arguments get nothing.
func completeRunIDs(ctx context.Context, a *app, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	store, err := a.store(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	runs, err := store.List(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var ids []string
	for _, r := range runs {
		if !strings.HasPrefix(r.RunID, toComplete) {
			continue
		}
		desc := "unreadable journal"
		if r.Journal != nil {
			desc = string(r.Journal.Status) + ", plan " + r.Journal.Plan.Name
		}
		ids = append(ids, cobra.CompletionWithDesc(r.RunID, desc))
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// completeStepIDs completes the id of a step of run runID, from its journal, with its status.
func completeStepIDs(ctx context.Context, a *app, runID, toComplete string) ([]string, cobra.ShellCompDirective) {
	store, err := a.store(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	j, err := store.Load(ctx, runID)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var ids []string
	for _, s := range j.Steps {
		if strings.HasPrefix(s.ID, toComplete) {
			ids = append(ids, cobra.CompletionWithDesc(s.ID, string(s.Status)))
		}
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// completePlanFile completes a command's one argument, a plan file.
func completePlanFile(ctx context.Context, a *app, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completePlanFiles(ctx, a, args, toComplete)
}

// completePlanFiles completes plan files: the shell lists *.yaml and *.yml files (and folders).
func completePlanFiles(context.Context, *app, []string, string) ([]string, cobra.ShellCompDirective) {
	return []string{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
}

// completeNone completes nothing, for commands that take no argument.
func completeNone(context.Context, *app, []string, string) ([]string, cobra.ShellCompDirective) {
	return nil, cobra.ShellCompDirectiveNoFileComp
}

// completeWords completes the first argument from a fixed list of words.
func completeWords(words ...string) completeFunc {
	return func(_ context.Context, _ *app, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, w := range words {
			if strings.HasPrefix(w, toComplete) {
				out = append(out, w)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
