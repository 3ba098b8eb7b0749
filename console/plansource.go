package console

import (
	"strings"

	"gopkg.in/yaml.v3"
)

// planLine is one line of the plan source as the run page shows it.
type planLine struct {
	N    int
	Text string
	Hi   bool // part of the highlighted step
}

// planSource splits a plan into lines, with the lines of step highlighted, and finds where each
// step starts: the line of every mapping with an `id` key (steps, hooks, rollback steps).
func planSource(src []byte, step string) ([]planLine, map[string]int) {
	positions := map[string]int{}
	ends := map[string]int{}
	var doc yaml.Node
	if yaml.Unmarshal(src, &doc) == nil {
		var walk func(n *yaml.Node)
		walk = func(n *yaml.Node) {
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					k, v := n.Content[i], n.Content[i+1]
					if k.Value == "id" && v.Kind == yaml.ScalarNode {
						if _, dup := positions[v.Value]; !dup {
							positions[v.Value] = n.Line
							ends[v.Value] = lastLine(n)
						}
					}
				}
			}
			for _, c := range n.Content {
				walk(c)
			}
		}
		walk(&doc)
	}
	text := strings.TrimSuffix(string(src), "\n")
	if text == "" {
		return nil, positions
	}
	from, to := positions[step], ends[step]
	var lines []planLine
	for i, l := range strings.Split(text, "\n") {
		n := i + 1
		lines = append(lines, planLine{N: n, Text: l, Hi: step != "" && n >= from && n <= to && from > 0})
	}
	return lines, positions
}

// lastLine is the last line a node spans, as far as its values tell.
func lastLine(n *yaml.Node) int {
	last := n.Line
	for _, c := range n.Content {
		last = max(last, lastLine(c))
	}
	return last
}
