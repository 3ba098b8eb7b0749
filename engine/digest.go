package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"gopkg.in/yaml.v3"
)

// stepDigest identifies what a step does: its id, type, config, condition and phase. Retry,
// timeout, onError and rollback are left out on purpose: changing how patiently a completed step
// was retried, or fixing a rollback block, must not make resume refuse the run.
func stepDigest(s *Step) string {
	canon := map[string]any{
		"id":    s.ID,
		"type":  s.Type,
		"with":  nodeValue(&s.With),
		"when":  nodeValue(&s.When),
		"phase": s.Phase,
		"hook":  s.Hook,
	}
	b, _ := json.Marshal(canon) // map keys are sorted: the encoding is canonical
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// nodeValue is a node's plain value: formatting, comments and anchors do not change a digest.
func nodeValue(n *yaml.Node) any {
	if n.Kind == 0 {
		return nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return n.Value
	}
	return normalize(v)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
