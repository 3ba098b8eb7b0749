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
