package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// completionScripts are the shells planrun completion writes a script for, with cobra's
// generators (bash: its version 2, which asks planrun for every word, descriptions included).
var completionScripts = []struct {
	shell string
	write func(root *cobra.Command, w io.Writer) error
}{
	{"bash", func(root *cobra.Command, w io.Writer) error { return root.GenBashCompletionV2(w, true) }},
	{"zsh", (*cobra.Command).GenZshCompletion},
	{"fish", func(root *cobra.Command, w io.Writer) error { return root.GenFishCompletion(w, true) }},
	{"powershell", (*cobra.Command).GenPowerShellCompletionWithDesc},
}

var completionCommand = &command{
	name:     "completion",
	usage:    "bash|zsh|fish|powershell",
	summary:  "Print the shell completion script for planrun (bash: source <(planrun completion bash)).",
	complete: completeWords(completionShells()...),
	run: func(ctx context.Context, a *app, args []string) error {
		shells := completionShells()
		if len(args) != 1 {
			return usagef("completion takes one shell: %s", strings.Join(shells, ", "))
		}
		for _, s := range completionScripts {
			if s.shell == args[0] {
				// A script only names the program: it runs planrun __complete for every
				// answer, so that completion follows the planrun on the PATH.
				return s.write(&cobra.Command{Use: "planrun"}, a.stdout)
			}
		}
		if guess := suggest(args[0], shells); guess != "" {
			return usagef("unknown shell %q: did you mean %q?", args[0], guess)
		}
		return usagef("unknown shell %q (%s)", args[0], strings.Join(shells, ", "))
	},
}

func completionShells() []string {
	shells := make([]string, 0, len(completionScripts))
	for _, s := range completionScripts {
		shells = append(shells, s.shell)
	}
	return shells
}

// kubectlCompleteName is what kubectl (1.26 and later) runs to complete kubectl planrun …,
// when it is on the PATH: it passes the words after planrun and reads what planrun __complete
// prints. A link of that name to planrun is all it takes.
const kubectlCompleteName = "kubectl_complete-planrun"

// commandLine is the arguments of planrun's command line: those after the program's name, with
// cobra's __complete in front when kubectl runs planrun to complete a plugin command line.
func commandLine(argv []string) []string {
	if strings.TrimSuffix(filepath.Base(argv[0]), ".exe") == kubectlCompleteName {
		return append([]string{cobra.ShellCompRequestCmd}, argv[1:]...)
	}
	return argv[1:]
}
