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
//
// The values come from the loader's decoder, so aliases in `with` count against the same budget
// as the rest of the plan: a bomb that reaches the digest is refused, not expanded.
func (l *loader) stepDigest(s *Step) (string, error) {
	with, err := l.nodeValue(&s.With)
	if err != nil {
		return "", err
	}
	when, err := l.nodeValue(&s.When)
	if err != nil {
		return "", err
	}
	canon := map[string]any{
		"id":    s.ID,
		"type":  s.Type,
		"with":  with,
		"when":  when,
		"phase": s.Phase,
		"hook":  s.Hook,
	}
	b, err := json.Marshal(canon) // map keys are sorted: the encoding is canonical
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// nodeValue is a node's plain value: formatting, comments and anchors do not change a digest.
func (l *loader) nodeValue(n *yaml.Node) (any, error) {
	if n.Kind == 0 {
		return nil, nil
	}
	return l.d.value(n)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
