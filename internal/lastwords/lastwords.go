// Package lastwords quotes the last line a program wrote (a command's stderr, a pod's log) in a
// one-line error message, where it usually says why the program failed.
package lastwords

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line returns the last non-blank line of out, trimmed, with control bytes and invalid UTF-8
// escaped and cut to its last max bytes ("..." in front when cut). The line goes into an error
// message, a journal and a terminal: colours, carriage returns or a terminal title written by the
// program must not act there.
func Line(out string, max int) string {
	return Printable(LastLine(out), max)
}

// LastLine returns the last non-blank line of s, trimmed.
func LastLine(s string) string {
	s = strings.TrimRight(s, "\r\n\t ")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}

// Printable escapes control bytes and invalid UTF-8 in s, cut to its last max bytes: the end of
// a line says the most.
func Printable(s string, max int) string {
	cut := false
	if len(s) > max {
		s, cut = s[len(s)-max:], true
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
	}
	var b strings.Builder
	if cut {
		b.WriteString("...")
	}
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[0])
		case r == '\t' || unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			b.WriteString(strings.Trim(strconv.QuoteRune(r), "'"))
		}
		s = s[size:]
	}
	return b.String()
}
