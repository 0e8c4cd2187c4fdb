#!/usr/bin/env bash
# Builds, from the istio.io/istio module pinned in go.mod, into a cache directory
# outside the repository keyed by the content of its inputs:
#   - `meshmig-istio` (Istio's own validation, ztunnel policy conversion, RBAC
#     builder and route generation, as a test oracle);
#   - `pilot-discovery` (istiod itself, recorded as a `tool` in go.mod), with the
#     istio-discovery chart's values and files it is configured from, so tests can
#     run a real istiod without Go or Helm.
#
#   ISTIO_HOME=$(e2e/istio/build.sh)
#   "$ISTIO_HOME/bin/meshmig-istio" validate < objects.yaml
#   "$ISTIO_HOME/bin/pilot-discovery" version
#
# Layout: ${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/istio/<key>/
#   bin/meshmig-istio, bin/pilot-discovery, SOURCES,
#   istiod/chart/{values.yaml,files/*.yaml}  (from the module's istio-discovery chart)
#   istiod/values.yaml                       (the test install's values, from ./istiod)
# The last line on stdout is the absolute path of <key>; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

log() { echo "build.sh: $*" >&2; }

# The key covers everything that determines the output, including the Go
# toolchain, and nothing else, so a warm call does no work beyond hashing.
key="$(
	{
		for f in go.mod go.sum build.sh $(find . \( -name '*.go' -o -path './istiod/*' \) -type f -not -path './.*' | LC_ALL=C sort); do
			printf '== %s\n' "$f"
			cat "$f"
		done
		go env GOVERSION GOOS GOARCH
	} | sha256sum | cut -c1-16
)"
cache="${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/istio"
out="$cache/$key"
complete() { [[ -x "$1/bin/meshmig-istio" && -x "$1/bin/pilot-discovery" && -f "$1/istiod/chart/values.yaml" ]]; }
if complete "$out"; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
# Builds killed outright (no EXIT trap) leave their temp dir; sweep old ones.
find "$cache" -mindepth 1 -maxdepth 1 -name '.build-*' -mmin +180 -exec rm -rf {} + 2>/dev/null || true
tmp="$(mktemp -d "$cache/.build-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/istiod/chart"

export CGO_ENABLED=0
export GOFLAGS=-mod=readonly

istio_version="$(go list -m -f '{{.Version}}' istio.io/istio)"
# go build fetches only the modules the binary links (a plain `go mod download`
# would fetch Istio's whole module graph: helm, prometheus, ...).
log "building meshmig-istio (istio.io/istio@$istio_version); a cold build takes a few minutes"
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/bin/meshmig-istio" .

# istiod. The module proxy carries no git metadata, so the version stamp is
# what Istio's own Makefile gives a build of this tree (the VERSION file plus
# "-dev") and the commit is the one in the pseudo-version.
istio_dir="$(go list -m -f '{{.Dir}}' istio.io/istio)"
[[ -n "$istio_dir" && -f "$istio_dir/VERSION" ]] || { log "istio.io/istio is not in the module cache"; exit 1; }
istiod_version="$(tr -d '[:space:]' <"$istio_dir/VERSION")-dev"
ldflags="-s -w"
for kv in "buildVersion=$istiod_version" "buildGitRevision=${istio_version##*-}" buildStatus=Clean \
	"buildTag=$istio_version" "buildOS=$(go env GOOS)" "buildArch=$(go env GOARCH)"; do
	ldflags+=" -X istio.io/istio/pkg/version.$kv"
done
log "building pilot-discovery $istiod_version (istiod; it shares most packages with meshmig-istio)"
go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/bin/pilot-discovery" istio.io/istio/pilot/cmd/pilot-discovery

# The chart istiod's ConfigMaps are rendered from (the harness renders them at
# start-up), and the test install's own values.
chart="$istio_dir/manifests/charts/istio-control/istio-discovery"
cp "$chart/values.yaml" "$tmp/istiod/chart/values.yaml"
cp -r "$chart/files" "$tmp/istiod/chart/files"
cp istiod/values.yaml "$tmp/istiod/values.yaml"
chmod -R u+w "$tmp/istiod" # files from the module cache are read-only

cat >"$tmp/SOURCES" <<SRC
istio istio.io/istio@$istio_version
istiod $istiod_version manifests/charts/istio-control/istio-discovery
$(go list -m -f '{{.Path}}@{{.Version}}' istio.io/api istio.io/client-go)
$(go env GOVERSION GOOS GOARCH | paste -sd' ')
SRC

# Publish atomically: a reader sees either no <key> or a complete one.
if ! mv -T "$tmp" "$out" 2>/dev/null; then
	complete "$out" || { log "could not move build into $out"; exit 1; }
	log "another build finished first; using it"
fi
trap - EXIT
rm -rf "$tmp"
log "built $out"
echo "$out"
