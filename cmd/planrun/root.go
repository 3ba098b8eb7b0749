package main

import (
	"strings"

	"github.com/spf13/cobra"
)

func init() {
	// planrun help lists the commands in the order of the table, which groups them by use.
	cobra.EnableCommandSorting = false
}

// newRootCommand makes planrun's command line from the command table: one cobra command per
// entry, its flags and the global ones (persistent flags of the root) parsed into a. Commands
// are declared in the table only; this is the one place that knows cobra's side of them.
func newRootCommand(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "planrun",
		Short: "planrun runs Kubernetes migrations from versioned YAML plans.",
		// run prints an error once, as one line naming the command, and exits with its code.
		SilenceErrors: true,
		SilenceUsage:  true,
		// A word that names no command, after flags (planrun -v aply): "did you mean".
		Args: func(root *cobra.Command, args []string) error { return unknownCommand(root, args) },
		// planrun alone, or with flags only, prints the usage, as planrun help does.
		RunE: func(root *cobra.Command, _ []string) error { return root.Help() },
		// planrun completion is an entry of the table, so that it has the same help and errors.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	a.globalFlags(root.PersistentFlags())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })
	root.SetHelpFunc(func(cmd *cobra.Command, _ []string) { printHelp(cmd) })
	// Wherever cobra would print its own usage text, it prints the help.
	root.SetUsageFunc(func(cmd *cobra.Command) error { printHelp(cmd); return nil })
	_ = root.MarkPersistentFlagDirname("state-dir")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"text", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
	for _, c := range commands {
		root.AddCommand(newCommand(a, c))
	}
	// Added now rather than as cobra executes, so that firstWordCommand finds it.
	root.InitDefaultHelpCmd()
	return root
}

// newCommand makes the cobra command of an entry of the table.
func newCommand(a *app, c *command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   strings.TrimSpace(c.name + " " + c.usage),
		Short: c.summary,
		// Each run checks its own arguments, with its own messages.
		Args: cobra.ArbitraryArgs,
		// The usage names the flags that matter; cobra would add [flags] to it.
		DisableFlagsInUseLine: true,
		RunE: func(_ *cobra.Command, args []string) error {
			a.setup()
			ctx, stop := interruptContext(a.stderr)
			defer stop()
			return c.run(ctx, a, args)
		},
	}
	if c.flags != nil {
		c.flags(cmd.Flags(), a)
	}
	if c.complete != nil {
		cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return a.completeArg(c.complete, args, toComplete)
		}
	}
	return cmd
}

// firstWordCommand reports a first word that names no command before cobra parses any flag,
// so that planrun aply --frob says what it always said: unknown command, did you mean apply.
func firstWordCommand(root *cobra.Command, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return nil // flags first: the root's Args check comes after them
	}
	switch args[0] {
	case cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
		return nil // cobra adds its hidden completion request command as it executes
	}
	if cmd, _, err := root.Find(args[:1]); err != nil || cmd != root {
		return nil
	}
	return unknownCommand(root, args[:1])
}

// unknownCommand is the error for a first word that names no command, with the closest command
// when it looks like a typo.
func unknownCommand(root *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	var names []string
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	if guess := suggest(args[0], names); guess != "" {
		return usagef("unknown command %q: did you mean %q? (run planrun help)", args[0], guess)
	}
	return usagef("unknown command %q (run planrun help)", args[0])
}
