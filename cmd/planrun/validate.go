package main

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/spf13/pflag"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/schemas"
)

var validateCommand = &command{
	name:     "validate",
	usage:    "PLAN.yaml... [--set name=value]... [--values FILE]...",
	summary:  "Check plan files without touching any cluster; every problem is reported as file:line:col.",
	complete: completePlanFiles,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.StringArrayVar(&a.rf.set, "set", nil, "set a param: name=value (repeatable); required params are checked only when values are given")
		fs.StringArrayVar(&a.rf.values, "values", nil, "YAML file of param values (repeatable)")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) == 0 {
			return usagef("validate takes one or more plan files")
		}
		withValues := len(a.rf.set) > 0 || len(a.rf.values) > 0
		var all engine.ErrorList
		var other []error
		for _, file := range args {
			p, err := engine.Load(file, engine.LoadOptions{
				Params:             engine.ParamValues{Set: a.rf.set, Files: a.rf.values},
				SkipRequiredParams: !withValues,
			})
			if ctx.Err() != nil {
				// Interrupted (SIGINT/SIGTERM): this file may have been cut off and the rest are
				// unchecked, so no "ok" and no exit 0.
				return engine.ErrInterrupted
			}
			if err != nil {
				if l := engine.AsErrorList(err); l != nil {
					all = append(all, l...)
				} else {
					other = append(other, err)
				}
				continue
			}
			fmt.Fprintf(a.stdout, "%s: ok (plan %s v%d, %d steps, digest %.12s)\n", file, p.Name(), p.Metadata.Version, len(p.Order()), p.Digest)
		}
		if len(other) > 0 {
			return errors.Join(append(other, all.Err())...)
		}
		return all.Err()
	},
}

var schemaCommand = &command{
	name:     "schema",
	usage:    "",
	summary:  "Print the JSON Schema of plan files (for editors: # yaml-language-server: $schema=...).",
	complete: completeNone,
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 0 {
			return usagef("schema takes no arguments")
		}
		_, err := a.stdout.Write(schemas.Plan)
		return err
	},
}

func sortStrings(s []string) { sort.Strings(s) }
