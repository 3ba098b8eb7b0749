package engine_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
)

// journalSeeds are journals as runs write them, and damaged or forged ones.
var journalSeeds = []string{
	`{"version":1,"runID":"r","plan":{"name":"p","file":"/p.yaml","digest":"ab"},"params":{"n":2,"f":1.5,"l":[1,"x",null],"m":{"k":true}},"status":"Running","started":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:01Z","steps":[{"id":"a","type":"exec","digest":"d","status":"Succeeded","when":true,"attempts":1,"outputs":{"n":12345678901234,"s":"x"},"state":{"k":1}},{"id":"b","type":"exec","digest":"e","status":"Running","attempts":2},{"id":"a:undo","type":"exec","rollbackOf":"a","digest":"d","status":"Pending"}]}`,
	`{"version":1,"runID":"r","plan":{"name":"p","file":"f","digest":"ab"},"params":{},"status":"Bogus","started":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z","steps":[]}`,
	`{"version":1,"runID":"../../x","plan":{},"params":{},"status":"Running","steps":[]}`,
	`{"version":1,"runID":"r","plan":{},"params":null,"status":"Failed","steps":[{"id":"a","status":"Done"},{"id":"a","status":"Pending"},null]}`,
	`{"version":2,"runID":"r"}`,
	`{"version":1,"runID":"r","status":"Running","steps":[{"id":"u","rollbackOf":"z","status":"Pending"}]}`,
	`{"version":1,"runID":"r","params":{"n":1e400}}`,
	`{"version":1`,
	`[]`,
	`null`,
	``,
}

// FuzzDecodeJournal: DecodeJournal never panics; it refuses what it cannot trust with an error
// that says so (ErrCorruptJournal or ErrJournalVersion), and a journal it accepts is stable:
// encoding and decoding it again gives the same bytes, so resume sees what the run saw.
func FuzzDecodeJournal(f *testing.F) {
	for _, s := range journalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := engine.DecodeJournal(data)
		if err != nil {
			if j != nil {
				t.Errorf("DecodeJournal returned a journal and an error")
			}
			if !errors.Is(err, engine.ErrCorruptJournal) && !errors.Is(err, engine.ErrJournalVersion) {
				t.Fatalf("error is neither ErrCorruptJournal nor ErrJournalVersion: %v", err)
			}
			return
		}
		once, err := j.Encode()
		if err != nil {
			t.Fatalf("an accepted journal does not encode: %v", err)
		}
		j2, err := engine.DecodeJournal(once)
		if err != nil {
			t.Fatalf("an accepted journal, encoded, is refused: %v\n%s", err, once)
		}
		twice, err := j2.Encode()
		if err != nil || !bytes.Equal(once, twice) {
			t.Fatalf("journal changed in a round trip (%v):\n%s\n%s", err, once, twice)
		}
		if strings.Contains(j.RunID, "/") {
			t.Fatalf("accepted run id %q", j.RunID)
		}
	})
}
