package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// ObjectNameFor is the name of an object a step creates when the plan gives none: prefix followed
// by the run and step ids, lower-cased, with what a DNS label cannot hold replaced by "-". When
// characters had to be replaced or the name would be longer than 63, it is cut and ends with a
// hash of the ids, so that different ids never give the same name.
func ObjectNameFor(prefix, runID, stepID string) string {
	raw := strings.ToLower(runID + "-" + stepID)
	var sb strings.Builder
	for _, r := range raw {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('-')
		}
	}
	s := prefix + strings.Trim(sb.String(), "-")
	if len(s) > 63 || s != prefix+raw {
		sum := sha256.Sum256([]byte(runID + "\x00" + stepID))
		if len(s) > 54 {
			s = s[:54]
		}
		s = strings.TrimRight(s, "-") + "-" + hex.EncodeToString(sum[:4])
	}
	return s
}
