#!/usr/bin/env bash
# Builds versitygw, the S3 server that tests of object-storage locations run (internal/s3test),
# from Go modules into a cache folder outside the repository, and prints the binary's path on
# stdout (logs go to stderr).
#
# Why versitygw: an Apache-2.0 S3 gateway over a local folder, written in Go, so that it builds
# from the module proxy (the only network here; nothing prebuilt can be downloaded) with
# CGO_ENABLED=0 into one static binary. A throwaway module requires its cmd/versitygw package.
#
# A second run finds the binary in the cache and returns at once; a missing or broken cache is
# rebuilt, never relied on.
#
# Usage: hack/build-s3-server.sh   (VERSITYGW_VERSION picks the release; default 1.8.0)
set -euo pipefail

VERSION=${VERSITYGW_VERSION:-1.8.0}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/planrun
bin=$cache/bin/versitygw-$VERSION
dir=$cache/build/versitygw-$VERSION
pkg=github.com/versity/versitygw/cmd/versitygw

log() { echo "build-s3-server: $*" >&2; }

# works: true when the cached binary exists, runs, and is the version asked for (it is stamped
# below; an unstamped build says "git").
works() {
  [ -x "$bin/versitygw" ] || return 1
  local out
  # Read whole before matching: with pipefail, `| grep -q` could stop reading early and fail the
  # pipeline through versitygw's SIGPIPE, rebuilding a good binary now and then.
  out=$("$bin/versitygw" --version 2>/dev/null) || return 1
  grep -q "^Version *: v$VERSION\$" <<<"$out"
}

if works; then
  echo "$bin/versitygw"
  exit 0
fi

mkdir -p "$bin" "$dir"
if [ ! -f "$dir/.prepared" ]; then
  log "preparing a module for $pkg v$VERSION"
  printf 'module planrun.dev/build/versitygw\n\ngo 1.26\n' >"$dir/go.mod"
  rm -f "$dir/go.sum"
  (cd "$dir" && go get "$pkg@v$VERSION" >&2)
  touch "$dir/.prepared"
fi
log "building versitygw v$VERSION (about two minutes the first time)"
# The version variables are those versitygw's own Makefile sets, so that --version names the
# release rather than "git".
ldflags="-s -w -X main.Version=v$VERSION -X main.Build=module -X main.BuildTime=none"
(cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/.versitygw.tmp" "$pkg")
mv "$bin/.versitygw.tmp" "$bin/versitygw"
works || { log "$bin/versitygw was built but does not run (or is not v$VERSION)"; exit 1; }
echo "$bin/versitygw"
