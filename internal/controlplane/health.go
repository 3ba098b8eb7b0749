package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"

	"planrun.dev/planrun/internal/childproc"
)

// componentStartTimeout bounds the wait for a component to report healthy. A healthy start takes
// a few seconds; the bound only matters when something hangs, and a component that exits is
// reported at once instead.
const componentStartTimeout = 90 * time.Second

// waitHealthy polls url until it answers 200, failing at once when p exits, so that a bad flag or
// a missing kernel feature is reported with the component's own words, not as a time-out.
func waitHealthy(ctx context.Context, p *childproc.Process, url string) error {
	// The components serve /healthz with a self-signed certificate on loopback; what is checked
	// is that they run, not who they are.
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // loopback health probe
	}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, componentStartTimeout)
	defer cancel()
	var last string
	for {
		if ended, _ := p.Exited(); ended {
			return p.Failed(fmt.Errorf("%s did not become healthy", p.Name()))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("%s health check: %w", p.Name(), err)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return p.Failed(fmt.Errorf("%s not healthy at %s after %s (last answer: %s)", p.Name(), url, componentStartTimeout, last))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
