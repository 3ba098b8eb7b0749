package kube

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"planrun.dev/planrun/engine"
)

// ErrUnknownKind is matched (errors.Is) by Client.Mapping's error for a kind the cluster does not
// serve (its CRD is not installed, or is gone).
var ErrUnknownKind = errors.New("unknown kind")

// ErrUnknownResource is matched (errors.Is) by Client.ResourceFor's error for a resource the
// cluster does not serve.
var ErrUnknownResource = errors.New("unknown resource")

// notServedError says what the cluster does not serve; it matches its sentinel and keeps
// discovery's own error as the cause.
type notServedError struct {
	sentinel, cause error
	msg             string
}

func (e *notServedError) Error() string   { return e.msg }
func (e *notServedError) Unwrap() []error { return []error{e.sentinel, e.cause} }

// Classify marks the API errors worth retrying as transient: conflicts, throttling, server
// timeouts, unavailable servers and dropped connections. Others (forbidden, invalid, not found)
// fail at once; retrying them only hides the real problem.
func Classify(err error) error {
	if err == nil || engine.IsTransient(err) {
		return err
	}
	switch {
	case apierrors.IsConflict(err), apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err),
		apierrors.IsTimeout(err), apierrors.IsServiceUnavailable(err), apierrors.IsUnexpectedServerError(err),
		// No type: the API server passes an etcd failure on as a plain InternalError whose only
		// trace of etcd is the text of its message and cause ("etcdserver: request timed out").
		apierrors.IsInternalError(err) && strings.Contains(err.Error(), "etcdserver"):
		return engine.Transient(err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		// No type: discovery's ErrGroupDiscoveryFailed keeps each group's error in a map it does
		// not unwrap, and http2 makes "client connection lost" with errors.New where it occurs.
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "http2: client connection lost") {
		return engine.Transient(err)
	}
	return err
}

// ObjectError says which object an error is about: "ConfigMap ns/name: reason".
func ObjectError(kind, namespace, name string, err error) error {
	return fmt.Errorf("%s: %w", ObjectName(kind, namespace, name), Classify(err))
}

// ObjectName is "Kind ns/name", or "Kind name" for cluster-scoped objects.
func ObjectName(kind, namespace, name string) string {
	if namespace == "" {
		return kind + " " + name
	}
	return kind + " " + namespace + "/" + name
}

// Reason is the short reason of an API error, for summaries of many failures.
func Reason(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		if s.Message != "" {
			return s.Message
		}
		return string(s.Reason)
	}
	return err.Error()
}
