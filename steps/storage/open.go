package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"

	"planrun.dev/planrun/internal/safepath"
)

// Provider opens the locations of one URL scheme. Each provider registers itself from init
// (s3, gs, azblob), so adding one touches nothing else.
type Provider struct {
	Scheme string
	// Doc is one line for error messages and the README: what the scheme is and its options.
	Doc string
	// Open opens the location at u (bucket = u.Host, prefix = the cleaned path, options = the
	// query). creds is nil for the provider SDK's default credential chain.
	Open func(ctx context.Context, u *url.URL, prefix string, creds *Credentials) (Location, error)
}

var providers = struct {
	sync.RWMutex
	m map[string]Provider
}{m: map[string]Provider{}}

// Register makes a URL scheme usable in every step that takes a location. Registering a scheme
// twice panics.
func Register(p Provider) {
	providers.Lock()
	defer providers.Unlock()
	if p.Scheme == "" || p.Open == nil {
		panic("storage.Register: a provider needs a scheme and an Open function")
	}
	if _, dup := providers.m[p.Scheme]; dup {
		panic(fmt.Sprintf("storage.Register: scheme %q registered twice", p.Scheme))
	}
	providers.m[p.Scheme] = p
}

// Schemes lists the registered schemes as "s3://", sorted, file:// first.
func Schemes() []string {
	providers.RLock()
	defer providers.RUnlock()
	names := make([]string, 0, len(providers.m))
	for n := range providers.m {
		names = append(names, n+"://")
	}
	sort.Strings(names)
	return append([]string{"file://"}, names...)
}

// IsLocal reports whether raw names a local path (a plain path or a file:// URL).
func IsLocal(raw string) bool {
	return !strings.Contains(raw, "://") || strings.HasPrefix(strings.ToLower(raw), "file://")
}

// Open opens the location raw names: a plain path or file:///path (a local folder or file),
// or a URL of a registered scheme (s3://bucket/prefix?region=…). creds holds credentials taken
// from a Secret (CredentialsFrom), or nil for the provider's default chain (environment,
// profile, workload identity). Errors name the location without credentials.
func Open(ctx context.Context, raw string, creds *Credentials) (Location, error) {
	t, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if t.local != "" {
		if creds != nil {
			return nil, fmt.Errorf("%s: credentials apply to object stores, not to a local path", Redact(raw))
		}
		return OpenLocal(t.local), nil
	}
	return t.provider.Open(ctx, t.u, t.prefix, creds)
}

// Check checks the form of a location without opening it (plan validation): a known scheme, a
// bucket, a safe prefix, no credentials in the URL.
func Check(raw string) error {
	_, err := parse(raw)
	return err
}

// target is a parsed location: a local path, or a provider's URL.
type target struct {
	local    string
	provider Provider
	u        *url.URL
	prefix   string
}

func parse(raw string) (target, error) {
	if raw == "" {
		return target{}, errors.New("empty location")
	}
	if !strings.Contains(raw, "://") {
		return target{local: raw}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("%s: not a valid URL: %v", Redact(raw), urlReason(err))
	}
	if u.User != nil {
		return target{}, fmt.Errorf("%s: a location URL must not hold credentials (user:password@); give them with credentialsFrom or the provider's environment", Redact(raw))
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme == "file" {
		if u.Host != "" && u.Host != "localhost" {
			return target{}, fmt.Errorf("%s: a file:// URL names a local path (file:///path), not host %q", Redact(raw), u.Host)
		}
		if u.Path == "" {
			return target{}, fmt.Errorf("%s: no path", Redact(raw))
		}
		return target{local: u.Path}, nil
	}
	providers.RLock()
	p, ok := providers.m[scheme]
	providers.RUnlock()
	if !ok {
		return target{}, fmt.Errorf("%s: scheme %s:// is %w (use a plain path or one of %s)", Redact(raw), scheme, ErrUnsupported, strings.Join(Schemes(), ", "))
	}
	if u.Host == "" {
		return target{}, fmt.Errorf("%s: no bucket (want %s://bucket/prefix)", Redact(raw), scheme)
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := safepath.Rel("prefix", prefix); err != nil {
			return target{}, fmt.Errorf("%s: %w", Redact(raw), err)
		}
	}
	return target{provider: p, u: u, prefix: prefix}, nil
}

// urlReason is url.Parse's reason without the URL it quotes (which may hold a secret).
func urlReason(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// sensitiveParams are query parameters that may carry a secret (an Azure SAS signature, a
// token): Redact hides their values.
var sensitiveParams = []string{"sig", "secret", "token", "key", "password", "credential", "signature"}

// Redact returns raw fit for messages, outputs and the journal: user info removed and the
// values of query parameters that look like secrets replaced.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Too broken to take apart: keep only what comes before a possible secret.
		if i := strings.IndexAny(raw, "@?"); i >= 0 {
			return raw[:i] + "…"
		}
		return raw
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		// Rewritten pair by pair, so that what is not a secret reads as it was written.
		pairs := strings.Split(u.RawQuery, "&")
		for i, pair := range pairs {
			k, _, _ := strings.Cut(pair, "=")
			lk := strings.ToLower(k)
			for _, s := range sensitiveParams {
				if strings.Contains(lk, s) {
					pairs[i] = k + "=REDACTED"
					break
				}
			}
		}
		u.RawQuery = strings.Join(pairs, "&")
	}
	return u.String()
}
