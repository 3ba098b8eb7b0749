package etcd

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"planrun.dev/planrun/engine"
)

// Classify marks the etcd errors worth retrying as transient: unavailable members, timeouts,
// leader changes, too many requests, dropped connections. Others (compacted revision,
// permission denied, request too large, bad certificates) fail at once.
func Classify(err error) error {
	if err == nil || engine.IsTransient(err) {
		return err
	}
	switch {
	case errors.Is(err, rpctypes.ErrCompacted), errors.Is(err, rpctypes.ErrGRPCCompacted),
		errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrGRPCPermissionDenied),
		errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrGRPCRequestTooLarge),
		errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrGRPCTooManyOps),
		errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, rpctypes.ErrLeaderChanged), errors.Is(err, rpctypes.ErrGRPCLeaderChanged),
		errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrGRPCNoLeader),
		errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrGRPCTimeout),
		errors.Is(err, rpctypes.ErrTooManyRequests):
		return engine.Transient(err)
	}
	if s, ok := status.FromError(unwrapAll(err)); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
			// No type: gRPC's picker turns the transport's handshake error into this status
			// with its text (status.Error(codes.Unavailable, err.Error())), dropping the error.
			if !strings.Contains(s.Message(), "certificate") && !strings.Contains(s.Message(), "tls:") {
				return engine.Transient(err)
			}
		}
	}
	return err
}

func unwrapAll(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// IsCompacted reports whether err says the requested revision was compacted away: the client's
// rpctypes.ErrCompacted (what KV calls and WatchResponse.Err return) or the server's gRPC status.
func IsCompacted(err error) bool {
	return errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrGRPCCompacted)
}
