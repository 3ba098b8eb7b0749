package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Plan and values files come in here: read with a size limit, checked for bytes YAML refuses,
// parsed as exactly one document, every error at a file:line:col.

// MaxFileSize is the largest plan or values file planrun reads: a plan of 10,000 steps is about
// 3 MB; a file much larger is a mistake (a log, a dump, /dev/zero), and reading it would only
// exhaust memory.
const MaxFileSize = 32 << 20

// ErrNotAFile and ErrFileTooLarge are the causes of errors for plan and values paths that name a
// directory, FIFO or device, or a file over MaxFileSize.
var (
	ErrNotAFile     = errors.New("not a regular file")
	ErrFileTooLarge = errors.New("file too large")
)

// readInput reads the plan or values file at path; what ("plan", "values file") goes into the
// messages. The path is checked before it is opened: opening a FIFO blocks until a writer comes,
// a device such as /dev/zero never ends.
func readInput(path, what string) ([]byte, error) {
	fail := func(msg string, err error) error {
		return &PosError{Pos: Pos{File: path}, Msg: fmt.Sprintf("cannot read %s: %s", what, msg), Err: err}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fail(pathErrorMessage(err), err)
	}
	if kind := specialKind(fi.Mode()); kind != "" {
		return nil, fail(fmt.Sprintf("it is %s, not a file", kind), ErrNotAFile)
	}
	if fi.Size() > MaxFileSize {
		return nil, fail(tooLarge(fi.Size()), ErrFileTooLarge)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fail(pathErrorMessage(err), err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1)) // the file may have grown since Stat
	if err != nil {
		return nil, fail(pathErrorMessage(err), err)
	}
	if len(data) > MaxFileSize {
		return nil, fail(tooLarge(int64(len(data))), ErrFileTooLarge)
	}
	return data, nil
}

func tooLarge(size int64) string {
	return fmt.Sprintf("it has %d bytes, more than the limit of %d MiB", size, MaxFileSize>>20)
}

// specialKind names what a path is when it is not a regular file.
func specialKind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return ""
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

// pathErrorMessage is an os error without the path, which the position already says.
func pathErrorMessage(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// parseYAML parses data as one YAML document. An empty file gives a node of Kind 0. what ("plan",
// "values file") goes into the message about a second document.
func parseYAML(file, what string, data []byte) (*yaml.Node, *PosError) {
	if off, msg := badByte(data); off >= 0 {
		return nil, errorf(offsetPos(file, data, off), "%s", msg)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return &yaml.Node{}, nil
		}
		return nil, yamlSyntaxError(file, data, err)
	}
	for {
		// A file may end with a bare "---", as some generators write; a second document with
		// content is refused rather than ignored.
		var next yaml.Node
		err := dec.Decode(&next)
		switch {
		case err == io.EOF:
			return &doc, nil
		case err != nil:
			return nil, yamlSyntaxError(file, data, err)
		case !emptyDocument(&next):
			return nil, errorf(Pos{File: file, Line: next.Line, Col: next.Column}, "a second YAML document starts here; a %s holds one document", what)
		}
	}
}

func emptyDocument(n *yaml.Node) bool {
	return len(n.Content) == 0 || len(n.Content) == 1 && isNull(n.Content[0]) && n.Content[0].Value == ""
}

// badByte finds the first byte YAML refuses, before yaml.v3 does without saying where: invalid
// UTF-8, and control characters other than tab, newline and carriage return. It returns -1 when
// there is none. UTF-16 files (with a byte order mark) are left to yaml.v3.
func badByte(data []byte) (int, string) {
	if bytes.HasPrefix(data, []byte{0xFE, 0xFF}) || bytes.HasPrefix(data, []byte{0xFF, 0xFE}) {
		return -1, ""
	}
	for i := 0; i < len(data); {
		c := data[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' || c == 0x7F {
				return i, fmt.Sprintf("control character %s is not allowed in YAML", quoteByte(c))
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return i, fmt.Sprintf("invalid UTF-8 (byte 0x%02X)", c)
		case r >= 0x80 && r <= 0x9F && r != 0x85, r == 0xFFFE, r == 0xFFFF:
			return i, fmt.Sprintf("control character %U is not allowed in YAML", r)
		}
		i += size
	}
	return -1, ""
}

func quoteByte(c byte) string { return strconv.QuoteRune(rune(c)) }

// offsetPos converts a byte offset of data to a line:col (columns count characters).
func offsetPos(file string, data []byte, off int) Pos {
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	start := bytes.LastIndexByte(data[:off], '\n') + 1
	return Pos{File: file, Line: line, Col: 1 + utf8.RuneCount(data[start:off])}
}

var (
	yamlLineRE   = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)
	yamlAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)
)

// yamlMessage is a yaml.v3 error without its "yaml: line N: " prefix.
func yamlMessage(err error) string {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg = strings.Join(te.Errors, "; ")
	}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		return m[2]
	}
	return msg
}

// yamlSyntaxError turns yaml.v3's "yaml: line 3: mapping values are not allowed" into a PosError
// at the place of the fault. yaml.v3 reports the line where the enclosing block or flow starts
// (and no line at all for an unknown anchor); the fault is found again here (see faultOffset).
func yamlSyntaxError(file string, data []byte, err error) *PosError {
	msg := yamlMessage(err)
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil && m[1] != "" {
		line, _ = strconv.Atoi(m[1])
	}
	pos := Pos{File: file, Line: line}
	if line > 0 {
		pos.Col = 1
	}
	if m := yamlAnchorRE.FindStringSubmatch(msg); m != nil {
		if off := aliasOffset(data, m[1]); off >= 0 {
			pos = offsetPos(file, data, off)
		}
	} else if off := faultOffset(data, err.Error(), line); off >= 0 {
		pos = offsetPos(file, data, off)
	}
	return &PosError{Pos: pos, Msg: "invalid YAML: " + msg, Err: err}
}

// aliasOffset finds the first use of alias *name in data, or -1.
func aliasOffset(data []byte, name string) int {
	re := regexp.MustCompile(`\*` + regexp.QuoteMeta(name) + `(?:[\s,\]}]|$)`)
	if loc := re.FindIndex(data); loc != nil {
		return loc[0]
	}
	return -1
}

// faultOffset finds where yaml.v3 stopped: the end of the shortest prefix of data that fails
// with the same error. A prefix that ends before the fault parses, or fails differently (cut in
// the middle of a quoted string, say), so a binary search over the prefixes after the reported
// line finds the byte at which the error appears. -1 when the search finds nothing better than
// the reported line.
func faultOffset(data []byte, want string, line int) int {
	lo := 0 // the start of the reported line: the fault is not before it
	for l := 1; l < line && lo < len(data); l++ {
		i := bytes.IndexByte(data[lo:], '\n')
		if i < 0 {
			return -1
		}
		lo += i + 1
	}
	same := func(n int) bool {
		var doc yaml.Node
		err := yaml.Unmarshal(data[:n], &doc)
		return err != nil && err.Error() == want
	}
	hi := len(data)
	if lo >= hi || same(lo) {
		return -1
	}
	for hi-lo > 1 { // same(lo) is false, same(hi) is true
		mid := lo + (hi-lo)/2
		if same(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	off := hi - 1
	for off > 0 && !utf8.RuneStart(data[off]) {
		off--
	}
	return off
}
