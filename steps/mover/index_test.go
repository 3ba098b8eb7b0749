package mover

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestIndexLineRoundTrip(t *testing.T) {
	for _, r := range []record{
		{Path: ".", Type: typeDir, Mode: 0o755, MTime: 1, Object: "k0123"},
		{Path: "a b/ü\xe9\x00x\n\"q\"", Type: typeFile, Mode: 0o4755, UID: 1000, GID: 65534, Size: 12345, MTime: -5, Link: 3,
			Sum: [32]byte{1, 2, 3, 31: 0xff}, Object: "Ix0123"},
		{Path: "s", Type: typeSymlink, Size: 7, MTime: 1700000000123456789, Target: "../a b\xff", Object: "abc"},
		{Path: "empty", Type: typeFile},
	} {
		line := string(r.appendLine(nil))
		if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
			t.Errorf("%q: not one line", line)
		}
		got, err := parseLine(strings.TrimSuffix(line, "\n"))
		if err != nil {
			t.Errorf("parseLine(%q): %v", line, err)
			continue
		}
		if got != r {
			t.Errorf("round trip of %+v gave %+v (line %q)", r, got, line)
		}
	}
	for _, bad := range []string{"", "f 644", "x 644 0 0 0 0 0 - - \"a\"", "f 9 0 0 0 0 0 zz - \"a\"", "d 755 0 0 0 0 0 - - a", "l 777 0 0 0 0 0 - - \"a\""} {
		if _, err := parseLine(bad); err == nil {
			t.Errorf("parseLine(%q) accepted it", bad)
		}
	}
}

// comparePaths sorts paths as a depth-first walk with names in byte order visits them.
func TestComparePathsIsWalkOrder(t *testing.T) {
	walk := []string{".", "a", "a/b", "a/b/c", "a/b.c", "a/b0", "a!", "a.b", "a.b/x", "ab", "b", "b/\xff"}
	shuffled := slices.Clone(walk)
	sort.Strings(shuffled) // plain string order differs: "a.b" < "a/b"
	slices.SortFunc(shuffled, comparePaths)
	if !slices.Equal(shuffled, walk) {
		t.Errorf("sorted %q, want %q", shuffled, walk)
	}
}

func TestKopiaNames(t *testing.T) {
	for _, n := range []string{"plain", "ünïcødé", "with space", "latin1-\xe9t\xe9", "\xff", "a\x01b"} {
		k := kopiaName(n)
		if realName(k) != n {
			t.Errorf("realName(kopiaName(%q)) = %q", n, realName(k))
		}
		if !strings.HasPrefix(k, "\x00") && k != n {
			t.Errorf("kopiaName(%q) = %q", n, k)
		}
	}
	if got := realPath(kopiaName("d\xe9") + "/x/" + kopiaName("\xff")); got != "d\xe9/x/\xff" {
		t.Errorf("realPath = %q", got)
	}
}

func TestEventsMatchTheContract(t *testing.T) {
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{&Progress{Phase: "backup", Files: 1, Bytes: 2, FilesTotal: 3, BytesTotal: 4, UploadedBytes: 5},
			`{"event":"progress","phase":"backup","files":1,"bytes":2,"filesTotal":3,"bytesTotal":4,"uploadedBytes":5,"downloadedBytes":0}`},
		{&Warning{Path: "rel/path", Message: "vanished"}, `{"event":"warning","path":"rel/path","message":"vanished"}`},
		{&Failure{Message: "boom"}, `{"event":"error","message":"boom"}`},
		{&BackupResult{Snapshot: "k1", Files: 1, Dirs: 2, Bytes: 3, HashedBytes: 4, CachedFiles: 5, UploadedBytes: 6, Warnings: 7, Seconds: 1.5},
			`{"event":"result","phase":"backup","snapshot":"k1","files":1,"dirs":2,"bytes":3,"hashedBytes":4,"cachedFiles":5,"uploadedBytes":6,"warnings":7,"seconds":1.5}`},
		{&RestoreResult{Snapshot: "k1", Files: 1, Bytes: 2, WrittenFiles: 3, WrittenBytes: 4, SkippedFiles: 5, Deleted: 6, Verified: true, Seconds: 2},
			`{"event":"result","phase":"restore","snapshot":"k1","files":1,"bytes":2,"writtenFiles":3,"writtenBytes":4,"skippedFiles":5,"deleted":6,"verified":true,"seconds":2}`},
		{&VerifyResult{Snapshot: "k1", Entries: 3, Files: 1, Bytes: 2, Seconds: 0.5},
			`{"event":"result","phase":"verify","snapshot":"k1","entries":3,"files":1,"bytes":2,"seconds":0.5}`},
	} {
		b, err := MarshalEvent(tc.ev)
		if err != nil || string(b) != tc.want {
			t.Errorf("MarshalEvent(%#v) = %s, %v; want %s", tc.ev, b, err, tc.want)
			continue
		}
		back, err := ParseEvent(b)
		if err != nil {
			t.Errorf("ParseEvent(%s): %v", b, err)
			continue
		}
		if again, _ := MarshalEvent(back); string(again) != tc.want {
			t.Errorf("ParseEvent(%s) = %#v", b, back)
		}
	}
	for _, bad := range []string{`{`, `{"event":"nope"}`, `{"event":"result","phase":"nope"}`} {
		if _, err := ParseEvent([]byte(bad)); err == nil {
			t.Errorf("ParseEvent(%s) accepted it", bad)
		}
	}
	var lines strings.Builder
	emit := JSONLines(&lines)
	emit(&Warning{Path: "a", Message: "b"})
	emit(FailureOf(errors.New("two\nlines")))
	if got := lines.String(); got != `{"event":"warning","path":"a","message":"b"}`+"\n"+`{"event":"error","message":"two; lines"}`+"\n" {
		t.Errorf("JSONLines wrote %q", got)
	}
}

func TestVerifyErrorMessage(t *testing.T) {
	e := &VerifyError{Snapshot: "k123", Entries: 10421, Count: 12}
	for i := range 10 {
		e.First = append(e.First, Mismatch{Path: "data/f" + string(rune('a'+i)), Problem: "sha256 differs"})
	}
	want := "verify: 12 of 10,421 entries differ from snapshot k123: data/fa (sha256 differs), "
	if got := e.Error(); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "data/fj (sha256 differs) and 2 more") {
		t.Errorf("Error() = %q", got)
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q", n, got)
		}
	}
}
