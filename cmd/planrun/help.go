package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// printHelp prints planrun's usage (the commands) for the root, a command's usage and flags for
// a command: what planrun help, planrun --help and planrun COMMAND --help print.
func printHelp(cmd *cobra.Command) {
	w := cmd.OutOrStdout()
	if !cmd.HasParent() {
		printUsage(w, cmd)
		return
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", cmd.UseLine(), cmd.Short)
	if fs := cmd.LocalFlags(); fs.HasAvailableFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	}
	if fs := cmd.InheritedFlags(); fs.HasAvailableFlags() {
		fmt.Fprintf(w, "\nGlobal flags:\n%s", fs.FlagUsages())
	}
}

// printUsage lists the commands with their summaries, in the order of the table.
func printUsage(w io.Writer, root *cobra.Command) {
	fmt.Fprintln(w, root.Short)
	fmt.Fprintln(w, "\nUsage: planrun COMMAND [flags]\n\nCommands:")
	var cmds []*cobra.Command
	width := 0
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() { // not cobra's help, nor hidden ones
			cmds = append(cmds, c)
			width = max(width, len(c.Name()))
		}
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.Name(), c.Short)
	}
	fmt.Fprintln(w, "\nRun planrun COMMAND --help for its flags.")
}
