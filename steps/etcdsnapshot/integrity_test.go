package etcdsnapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// TestIntegrityWriter: one pass gives the sha256 of the whole stream and checks the database's
// sha256 that etcd appends, whatever the chunks; the database alone goes to body.
func TestIntegrityWriter(t *testing.T) {
	db := []byte(strings.Repeat("bbolt pages ", 10_000))
	dbSum := sha256.Sum256(db)
	good := append(append([]byte(nil), db...), dbSum[:]...)
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 1
	for _, tc := range []struct {
		name   string
		stream []byte
		ok     bool
	}{
		{"intact", good, true},
		{"hash changed", bad, false},
		{"truncated", good[:len(good)-1], false},
		{"shorter than a hash", good[:10], false},
	} {
		for _, chunk := range []int{1, 31, 32, 33, 4096, len(tc.stream)} {
			var body strings.Builder
			w := &integrityWriter{h: sha256.New(), body: &body}
			for rest := tc.stream; len(rest) > 0; {
				n := min(chunk, len(rest))
				w.Write(rest[:n])
				rest = rest[n:]
			}
			whole := sha256.Sum256(tc.stream)
			sum, ok := w.finish()
			if ok != tc.ok || sum != hex.EncodeToString(whole[:]) {
				t.Fatalf("%s, chunks of %d: ok %v sum %s, want %v %x", tc.name, chunk, ok, sum, tc.ok, whole)
			}
			if tc.ok && body.String() != string(db) {
				t.Fatalf("%s, chunks of %d: body of %d bytes, want the %d of the database", tc.name, chunk, body.Len(), len(db))
			}
		}
	}
}
