package kubevolumes

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"planrun.dev/planrun/engine"
)

// totals add up the figures of the volumes.
type totals struct {
	files, bytes, uploaded, written, warnings int64
}

func (t *totals) add(o totals) {
	t.files += o.files
	t.bytes += o.bytes
	t.uploaded += o.uploaded
	t.written += o.written
	t.warnings += o.warnings
}

func (t totals) outputs() engine.Outputs {
	return engine.Outputs{
		"files": t.files, "bytes": t.bytes, "uploadedBytes": t.uploaded, "writtenBytes": t.written, "warnings": t.warnings,
	}
}

// summary is the line the CLI prints: "2 volumes: 1.0 GiB in 10,421 files; 12 MiB uploaded,
// 11 MiB written".
func (t totals) summary(volumes int, verified bool) string {
	s := fmt.Sprintf("%s: %s in %s; %s uploaded, %s written", plural(volumes, "volume"), formatBytes(t.bytes),
		plural64(t.files, "file"), formatBytes(t.uploaded), formatBytes(t.written))
	if verified {
		s += "; verified"
	}
	if t.warnings > 0 {
		s += "; " + plural64(t.warnings, "warning")
	}
	return s
}

// formatBytes is a size in binary units: "512 B", "1.5 KiB", "12 MiB", "1.0 GiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := -1
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	if v < 10 {
		return fmt.Sprintf("%.1f %s", v, units[i])
	}
	return fmt.Sprintf("%.0f %s", v, units[i])
}

// formatCount writes n with thousands separators: 10,421.
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func plural(n int, word string) string { return plural64(int64(n), word) }

func plural64(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return formatCount(n) + " " + word + "s"
}

func roundSeconds(s float64) float64 { return math.Round(s*1000) / 1000 }

// joinMax joins at most 10 names, saying how many more there are.
func joinMax(names []string) string {
	const most = 10
	if len(names) > most {
		return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
	}
	return strings.Join(names, ", ")
}

// orEmpty keeps an output list a list (JSON []) when it has no items.
func orEmpty(l []any) []any {
	if l == nil {
		return []any{}
	}
	return l
}
