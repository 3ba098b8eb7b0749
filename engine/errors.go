package engine

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Pos is a place in a plan file. Line and Col are 1-based, as editors count them.
type Pos struct {
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
	Col  int    `json:"col,omitempty"`
}

func (p Pos) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.File == "":
		return fmt.Sprintf("%d:%d", p.Line, p.Col)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// PosError is an error at a place in a plan file: "plan.yaml:12:7: message".
type PosError struct {
	Pos Pos
	Msg string
	Err error // optional cause, for errors.Is/As
}

func (e *PosError) Error() string {
	if e.Pos == (Pos{}) {
		return e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

func (e *PosError) Unwrap() error { return e.Err }

func errorf(pos Pos, format string, args ...any) *PosError {
	return &PosError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// ErrorList collects every problem found while loading a plan, so that an operator sees them
// all at once rather than fixing one per run. Error() prints one per line, sorted by position.
type ErrorList []*PosError

func (l ErrorList) Error() string {
	l.sort()
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (l ErrorList) sort() {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Pos, l[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// Unwrap lets errors.Is and errors.As see the causes of every entry (ErrTooManyAliases, ...).
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// Err returns nil for an empty list, so callers can `return list.Err()`.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	l.sort()
	return l
}

// AsErrorList returns the PosErrors inside err: all of them for an ErrorList, one for a
// PosError, none otherwise.
func AsErrorList(err error) ErrorList {
	var l ErrorList
	if errors.As(err, &l) {
		return l
	}
	var p *PosError
	if errors.As(err, &p) {
		return ErrorList{p}
	}
	return nil
}

// maxQuoted is how much of a value an error message quotes: enough to recognise it, short
// enough that a 100 KB expression does not become a 100 KB line.
const maxQuoted = 120

// quoteLong quotes s for an error message (control bytes escaped), cut after maxQuoted bytes
// with the length of the whole.
func quoteLong(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}
