// Package schemas holds the JSON Schema of plan files. plan.schema.json is generated from the Go
// types of the engine and the registered step types (go test ./schemas -update) and a test keeps
// it in sync, so editors, CI linters and `planrun schema` all see what the loader accepts.
package schemas

import _ "embed"

// Plan is the JSON Schema of plan files.
//
//go:embed plan.schema.json
var Plan []byte
