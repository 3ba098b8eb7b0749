package storage

import "strings"

// Display names the location raw in messages and outputs before it is opened: a plain path as
// written, a URL through Redact (no credentials, secret-looking query values hidden).
func Display(raw string) string {
	if !strings.Contains(raw, "://") {
		return raw
	}
	return Redact(raw)
}
