package s3test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/internal/childproc"
)

// readyPoll is the pause between two readiness checks.
const readyPoll = 20 * time.Millisecond

// waitReady waits until the server answers a ListBuckets signed with its keys, for at most
// s.startTimeout, and fails at once if the process exits. A signed request rather than any
// answer: another server that took the port in the race freePort leaves answers too, but only
// this one knows these random keys.
func (s *Server) waitReady(p *childproc.Process) error {
	// One attempt per check, each on a new connection: the SDK's retries and back-off would
	// only delay the next check, and a pooled connection would outlive the check.
	client := s.newClient(func(o *s3.Options) {
		o.RetryMaxAttempts = 1
		o.HTTPClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: s.tlsConfig}}
	})
	deadline := time.Now().Add(s.startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			return nil
		}
		if ended, _ := p.Exited(); ended {
			return p.Failed(errors.New("exited before answering"))
		}
		if time.Now().After(deadline) {
			return p.Failed(fmt.Errorf("no answer within %s; last: %w", s.startTimeout, err))
		}
		select {
		case <-p.Done():
		case <-time.After(readyPoll):
		}
	}
}
