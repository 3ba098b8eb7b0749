package kubevolumes

import "time"

// SetMoverCommand makes the mover pods run command (with the mover's arguments) instead of the
// image's entrypoint, until the returned function is called.
func SetMoverCommand(command []string) (restore func()) {
	old := moverCommand
	moverCommand = command
	return func() { moverCommand = old }
}

// SetStuckAfter shortens how long a mover pod may wait for an image or a node.
func SetStuckAfter(d time.Duration) (restore func()) {
	old, oldU := stuckAfter, unschedulableAfter
	stuckAfter, unschedulableAfter = d, d
	return func() { stuckAfter, unschedulableAfter = old, oldU }
}

// ObjectName, StepHash and the label names, for tests that look for what the step made.
var (
	ObjectName = objectName
	StepHash   = stepHash
)

const (
	StepLabel = stepLabel
	RoleLabel = roleLabel
)

// FormatBytes and FormatCount are the summary's formats.
var (
	FormatBytes = formatBytes
	FormatCount = formatCount
)
