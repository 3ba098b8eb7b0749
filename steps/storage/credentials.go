package storage

import (
	"fmt"
	"sort"
	"strings"
)

// Credentials are a location's credentials as an operator keeps them: the keys and values of a
// Kubernetes Secret (Gardener's backup Secrets, CAM's repository Secrets, Velero's
// cloud-credentials). Each provider picks the keys it knows (see its Doc). The values never
// leave this package: String and GoString name the source only, so a credential cannot reach a
// log, an output or the journal by being printed.
type Credentials struct {
	source string
	values map[string][]byte
}

// NewCredentials wraps the data of a Secret; source names it in messages
// ("Secret garden/backup-seed-a on cluster garden").
func NewCredentials(source string, data map[string][]byte) *Credentials {
	return &Credentials{source: source, values: data}
}

func (c *Credentials) String() string {
	if c == nil {
		return "the provider's default credentials"
	}
	return "credentials from " + c.source
}

// GoString keeps %#v from printing the values.
func (c *Credentials) GoString() string { return c.String() }

// Source names where the credentials came from.
func (c *Credentials) Source() string { return c.source }

// first returns the value of the first of names present (non-empty), trimmed of surrounding
// white space (a Secret made with `kubectl create secret --from-file` keeps a trailing newline).
func (c *Credentials) first(names ...string) (string, bool) {
	for _, n := range names {
		if v, ok := c.values[n]; ok && len(strings.TrimSpace(string(v))) > 0 {
			return strings.TrimSpace(string(v)), true
		}
	}
	return "", false
}

// raw returns the untrimmed value of the first of names present.
func (c *Credentials) raw(names ...string) ([]byte, bool) {
	for _, n := range names {
		if v, ok := c.values[n]; ok && len(v) > 0 {
			return v, true
		}
	}
	return nil, false
}

// keys lists the Secret's keys (names only), for an error that says what was found.
func (c *Credentials) keys() string {
	names := make([]string, 0, len(c.values))
	for k := range c.values {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// missing is the error for a Secret without the keys a provider needs.
func (c *Credentials) missing(want string) error {
	return fmt.Errorf("%s: no %s (keys found: %s)", c.source, want, c.keys())
}

// envFile parses the lines KEY=value (or key = value, an INI file's entries) of a value such as
// Velero's "cloud" key; [section] headers pick the profile: only the entries of section
// (default "default") and those before any header are returned.
func envFile(b []byte, section string) map[string]string {
	if section == "" {
		section = "default"
	}
	out := map[string]string{}
	current := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			current = strings.TrimSpace(strings.TrimPrefix(strings.TrimSuffix(line, "]"), "["))
			current = strings.TrimPrefix(current, "profile ")
			continue
		}
		if current != "" && current != section {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return out
}
