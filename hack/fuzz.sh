#!/bin/sh
# Runs every fuzz target of the module (every Fuzz* function, found by `go test -list`) for a
# share of FUZZTIME (the total, e.g. 30s or 2m), and prints for each the number of inputs it
# executed, so that a fuzz run that did next to nothing shows. Fails if a target finds a
# crasher (go test writes it to the package's testdata/fuzz, where it becomes a regression test)
# or does not fuzz at all.
#
#   hack/fuzz.sh              FUZZTIME=30s, at least MINFUZZ=5s per target
#   FUZZTIME=10m FUZZCACHE=go hack/fuzz.sh
#
# By default each target starts from the repository's seeds and testdata corpus only, in a
# fresh cache folder: Go's shared fuzz cache grows with every run, and replaying it ("gathering
# baseline coverage") eventually takes longer than a short run's share, which then fuzzes
# nothing. FUZZCACHE=go keeps Go's cache, for long campaigns that build on earlier ones.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
MINFUZZ=${MINFUZZ:-5}
# Fuzz targets need no control plane: the packages' TestMains then start none.
export PLANRUN_SKIP_CONTROLPLANE=1

case $FUZZTIME in
*m) total=$(( ${FUZZTIME%m} * 60 )) ;;
*s) total=${FUZZTIME%s} ;;
*) echo "fuzz: FUZZTIME=$FUZZTIME: want seconds (30s) or minutes (2m)" >&2; exit 2 ;;
esac

# Only packages whose tests declare a Fuzz function are listed (listing runs each package's
# TestMain); `go test -list` then names the targets as go test sees them.
pkgs=$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u)
targets=$(for p in $pkgs; do
	$GO test -list '^Fuzz' "$p" | awk -v p="$p" '/^Fuzz/ { print p " " $1 }'
done)
n=$(printf '%s\n' "$targets" | grep -c . || true)
if [ "$n" -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
share=$(( total / n ))
[ "$share" -ge "$MINFUZZ" ] || share=$MINFUZZ
echo "fuzz: $n targets, ${share}s each"

log=$(mktemp)
cache=$(mktemp -d)
trap 'rm -rf "$log" "$cache"' EXIT
cacheflag=-test.fuzzcachedir=$cache
[ "${FUZZCACHE:-}" != go ] || cacheflag=
failed=0
printf '%s\n' "$targets" | while read -r pkg name; do
	# -fuzzminimizetime: by default a worker spends up to 60 s shrinking each new interesting
	# input, executing nothing new meanwhile (a short run then reports a few dozen execs); a
	# short bound keeps the run fuzzing.
	if $GO test "$pkg" -run '^$' -fuzz "^$name\$" -fuzztime "${share}s" -fuzzminimizetime 200x ${cacheflag:+-args "$cacheflag"} >"$log" 2>&1; then
		status=ok
	else
		status=FAIL
	fi
	# go test -fuzz reports "fuzz: elapsed: 5s, execs: 123456 (24691/sec), ..." as it goes; the
	# last report is the total.
	execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
	printf '%-28s %-26s %12s execs in %ss  %s\n' "$name" "$pkg" "${execs:-0}" "$share" "$status"
	if [ "$status" = FAIL ] || [ -z "$execs" ] || [ "$execs" -eq 0 ]; then
		cat "$log"
		exit 1
	fi
done || failed=1
exit $failed
