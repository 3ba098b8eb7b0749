package kubevolumes

import "time"

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
