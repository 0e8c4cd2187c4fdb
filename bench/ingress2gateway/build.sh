#!/usr/bin/env bash
# Builds ingress2gateway (the baseline of the conversion benchmark) and i2gwbench into a
# cache directory outside the repository, keyed by the content of its inputs, as
# e2e/testenv/build.sh does.
#
#   I2GW_HOME=$(bench/ingress2gateway/build.sh)
#   "$I2GW_HOME/bin/ingress2gateway" print --providers=istio --input-file routes.yaml
#
# Layout: ${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/ingress2gateway/<key>/
#   bin/ingress2gateway  bin/i2gwbench  SOURCES
# The last line on stdout is the absolute path of <key>; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

log() { echo "build.sh: $*" >&2; }

# The key covers everything that determines the output, including the Go toolchain.
key="$(
	{
		for f in go.mod go.sum build.sh $(find . -name '*.go' -not -path './.*' | LC_ALL=C sort); do
			printf '== %s\n' "$f"
			cat "$f"
		done
		go env GOVERSION GOOS GOARCH
	} | sha256sum | cut -c1-16
)"
cache="${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/ingress2gateway"
out="$cache/$key"
if [[ -x "$out/bin/ingress2gateway" && -x "$out/bin/i2gwbench" ]]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
# Builds killed outright (no EXIT trap) leave their temp dir; sweep old ones.
find "$cache" -mindepth 1 -maxdepth 1 -name '.build-*' -mmin +180 -exec rm -rf {} + 2>/dev/null || true
tmp="$(mktemp -d "$cache/.build-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

export CGO_ENABLED=0
export GOFLAGS=-mod=readonly

log "downloading modules"
go mod download

version="$(go list -m -f '{{.Version}}' github.com/kubernetes-sigs/ingress2gateway)"
log "building ingress2gateway $version and i2gwbench; a cold build takes a few minutes"
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/bin/ingress2gateway" github.com/kubernetes-sigs/ingress2gateway
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/bin/i2gwbench" ./cmd/i2gwbench
cat >"$tmp/SOURCES" <<SRC
ingress2gateway github.com/kubernetes-sigs/ingress2gateway@$version
go $(go env GOVERSION)
SRC

# Publish atomically: a reader sees either no <key> or a complete one.
if ! mv -T "$tmp" "$out" 2>/dev/null; then
	[[ -x "$out/bin/ingress2gateway" ]] || { log "could not move build into $out"; exit 1; }
	log "another build finished first; using it"
fi
trap - EXIT
rm -rf "$tmp"
log "built $out"
echo "$out"
