package storage

import (
	"errors"
	"fmt"
)

// Errors a step may match with errors.Is, whatever the provider.
var (
	// ErrNotRegular: a local path that is a FIFO, a device or a socket where a file is expected.
	ErrNotRegular = errors.New("not a regular file")
	// ErrChecksum: content whose sha256 is not the one expected.
	ErrChecksum = errors.New("sha256 mismatch")
	// ErrUnsupported: a URL scheme or option this build does not know.
	ErrUnsupported = errors.New("not supported")
	// ErrNoBucket: the bucket (or container) does not exist.
	ErrNoBucket = errors.New("bucket does not exist")
	// ErrAccessDenied: the credentials were refused or lack a permission.
	ErrAccessDenied = errors.New("access denied")
	// ErrUnreachable: the service's endpoint could not be reached.
	ErrUnreachable = errors.New("endpoint unreachable")
)

// Error is a failed operation on a location: what (Op), where (the location's URL, without
// credentials, and the path inside it) and why. It matches fs.ErrNotExist for an absent
// object, and the Err* values above.
type Error struct {
	URL  string
	Op   string // "read", "write", "list", "stat", "remove", "copy", "open"
	Path string
	// Kind is one of the Err* values, fs.ErrNotExist, or nil when unclassified.
	Kind error
	// Detail is the provider's own one-line reason (its error code and message).
	Detail string
	// Retry marks a failure worth another attempt (throttling, a dropped connection).
	Retry bool
	Err   error
}

func (e *Error) Error() string {
	where := e.URL
	if e.Path != "" {
		where += ": " + e.Path
	}
	msg := fmt.Sprintf("%s: %s", where, e.Op)
	if e.Kind != nil {
		msg += ": " + e.Kind.Error()
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

func (e *Error) Unwrap() []error {
	out := []error{}
	if e.Kind != nil {
		out = append(out, e.Kind)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// Transient lets engine.IsTransient see a failure worth retrying without this package knowing
// the engine.
func (e *Error) Transient() bool { return e.Retry }
