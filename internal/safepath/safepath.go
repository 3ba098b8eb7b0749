// Package safepath is the one place where a name that came from outside — a run id, a step id,
// an entry read from a backup manifest, a snapshot name — becomes a path. Every such name is
// checked here before it is joined to its folder, so that no crafted name ("../../x", "/etc",
// "a\\b", a NUL byte) can reach outside that folder (the zip-slip class of bugs).
package safepath

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrUnsafe is matched (errors.Is) by every error of this package.
var ErrUnsafe = errors.New("unsafe name")

// MaxName is the longest name accepted as one path element (the common file-system limit).
const MaxName = 255

// MaxPath is the longest relative path accepted.
const MaxPath = 4096

// Error says which name was refused and why: `run id "../x": must not contain '/'`.
type Error struct {
	What   string // what the name is: "run id", "backup entry", ...
	Name   string
	Reason string
}

func (e *Error) Error() string {
	name := e.Name
	if len(name) > 80 {
		name = name[:80] + "…"
	}
	return fmt.Sprintf("%s %q: %s", e.What, name, e.Reason)
}

// Is makes errors.Is(err, ErrUnsafe) true.
func (e *Error) Is(target error) bool { return target == ErrUnsafe }

// Name checks that name is usable as a single path element: not empty, not "." or "..", no
// separator of any platform, no NUL or control character, valid UTF-8, at most MaxName bytes.
func Name(what, name string) error {
	bad := func(reason string) error { return &Error{What: what, Name: name, Reason: reason} }
	switch {
	case name == "":
		return bad("must not be empty")
	case name == "." || name == "..":
		return bad("must not be . or ..")
	case len(name) > MaxName:
		return bad(fmt.Sprintf("is longer than %d bytes", MaxName))
	case strings.ContainsAny(name, `/\`):
		return bad(`must not contain '/' or '\'`)
	case !utf8.ValidString(name):
		return bad("is not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return bad("must not contain control characters")
		}
	}
	return nil
}

// Rel checks that p is a relative, slash-separated path that stays inside the folder it is
// joined to: every element passes Name, and the path is not absolute.
func Rel(what, p string) error {
	bad := func(reason string) error { return &Error{What: what, Name: p, Reason: reason} }
	switch {
	case p == "":
		return bad("must not be empty")
	case len(p) > MaxPath:
		return bad(fmt.Sprintf("is longer than %d bytes", MaxPath))
	case strings.HasPrefix(p, "/") || filepath.IsAbs(p) || filepath.VolumeName(p) != "":
		return bad("must be a relative path")
	}
	for _, elem := range strings.Split(p, "/") {
		if err := Name(what, elem); err != nil {
			reason := err.(*Error).Reason
			if elem == "" {
				reason = "must not contain empty elements ('//' or a trailing '/')"
			}
			return bad(reason)
		}
	}
	return nil
}

// Join checks name with Name and joins it to dir.
func Join(dir, what, name string) (string, error) {
	if err := Name(what, name); err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

// JoinRel checks p with Rel and joins it to dir.
func JoinRel(dir, what, p string) (string, error) {
	if err := Rel(what, p); err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.FromSlash(p)), nil
}
