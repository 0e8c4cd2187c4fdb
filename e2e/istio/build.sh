#!/usr/bin/env bash
# Builds the `meshmig-istio` binary (Istio's own validation, ztunnel policy
# conversion and RBAC builder, from the istio.io/istio module pinned in go.mod)
# into a cache directory outside the repository, keyed by the content of its inputs.
#
#   ISTIO_HOME=$(e2e/istio/build.sh)
#   "$ISTIO_HOME/bin/meshmig-istio" validate < objects.yaml
#
# Layout: ${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/istio/<key>/{bin/meshmig-istio,SOURCES}
# The last line on stdout is the absolute path of <key>; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

log() { echo "build.sh: $*" >&2; }

# The key covers everything that determines the output, including the Go
# toolchain, and nothing else, so a warm call does no work beyond hashing.
key="$(
	{
		for f in go.mod go.sum build.sh $(find . -name '*.go' -not -path './.*' | LC_ALL=C sort); do
			printf '== %s\n' "$f"
			cat "$f"
		done
		go env GOVERSION GOOS GOARCH
	} | sha256sum | cut -c1-16
)"
cache="${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/istio"
out="$cache/$key"
if [[ -x "$out/bin/meshmig-istio" ]]; then
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

istio_version="$(go list -m -f '{{.Version}}' istio.io/istio)"
# go build fetches only the modules the binary links (a plain `go mod download`
# would fetch Istio's whole module graph: helm, prometheus, ...).
log "building meshmig-istio (istio.io/istio@$istio_version); a cold build takes a few minutes"
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/bin/meshmig-istio" .
cat >"$tmp/SOURCES" <<SRC
istio istio.io/istio@$istio_version
$(go list -m -f '{{.Path}}@{{.Version}}' istio.io/api istio.io/client-go)
$(go env GOVERSION GOOS GOARCH | paste -sd' ')
SRC

# Publish atomically: a reader sees either no <key> or a complete one.
if ! mv -T "$tmp" "$out" 2>/dev/null; then
	[[ -x "$out/bin/meshmig-istio" ]] || { log "could not move build into $out"; exit 1; }
	log "another build finished first; using it"
fi
trap - EXIT
rm -rf "$tmp"
log "built $out"
echo "$out"
