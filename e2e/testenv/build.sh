#!/usr/bin/env bash
# Builds the `testenv` binary and gathers the CRDs it loads into a cache
# directory outside the repository, keyed by the content of its inputs.
#
#   TESTENV_HOME=$(e2e/testenv/build.sh)
#   "$TESTENV_HOME/bin/testenv" up --dir "$(mktemp -d)" --crd-dir "$TESTENV_HOME/crds"
#
# Layout: ${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/testenv/<key>/{bin/testenv,crds/*.yaml}
# The last line on stdout is the absolute path of <key>; progress goes to stderr.
set -euo pipefail

# CRD sources, fetched with the go command through the module proxy. Keep
# crds.lock in step (the build fails if they disagree).
ISTIO_API_MODULE=istio.io/api
ISTIO_API_VERSION=v1.32.0
ISTIO_CRD_FILE=kubernetes/customresourcedefinitions.gen.yaml
GATEWAY_API_MODULE=sigs.k8s.io/gateway-api
GATEWAY_API_VERSION=v1.6.3
GATEWAY_CRD_GLOB='config/crd/standard/gateway.networking.k8s.io_*.yaml'

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

log() { echo "build.sh: $*" >&2; }

expected_lock="$(cat <<LOCK
# CRD sources gathered by build.sh (module@version path-in-module).
# Part of the build cache key; build.sh checks it matches its pinned versions.
${ISTIO_API_MODULE}@${ISTIO_API_VERSION} ${ISTIO_CRD_FILE}
${GATEWAY_API_MODULE}@${GATEWAY_API_VERSION} ${GATEWAY_CRD_GLOB}
LOCK
)"
if [[ "$(cat crds.lock)" != "$expected_lock" ]]; then
	log "crds.lock does not match the versions pinned in build.sh; expected:"
	echo "$expected_lock" >&2
	exit 1
fi

# The key covers everything that determines the output, including the Go
# toolchain, and nothing else, so a warm call does no work beyond hashing.
key="$(
	{
		for f in go.mod go.sum build.sh crds.lock $(find . -name '*.go' -not -path './.*' | LC_ALL=C sort); do
			printf '== %s\n' "$f"
			cat "$f"
		done
		go env GOVERSION GOOS GOARCH
	} | sha256sum | cut -c1-16
)"
cache="${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/testenv"
out="$cache/$key"
if [[ -x "$out/bin/testenv" ]]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
# Builds killed outright (no EXIT trap) leave their temp dir; sweep old ones.
find "$cache" -mindepth 1 -maxdepth 1 -name '.build-*' -mmin +180 -exec rm -rf {} + 2>/dev/null || true
tmp="$(mktemp -d "$cache/.build-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/crds" "$tmp/work"

export CGO_ENABLED=0
export GOFLAGS=-mod=readonly

log "downloading modules"
go mod download

# Module metadata for the version stamp. The proxy serves no git metadata, so
# the commit is left empty (upstream's placeholder would read "$Format:%H$").
# The build date is the release's publication time, which keeps the build
# reproducible.
k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_date="$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
major="${k8s_version#v}"
major="${major%%.*}"
minor="${k8s_version#v*.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$k8s_date"
done

log "building testenv ($k8s_version); a cold build takes several minutes"
go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/bin/testenv" .

# Module downloads outside this module, so that go.mod/go.sum stay untouched.
module_dir() {
	(cd "$tmp/work" && GOFLAGS=-mod=mod go mod download -json "$1@$2") |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}
log "gathering CRDs"
istio_dir="$(module_dir "$ISTIO_API_MODULE" "$ISTIO_API_VERSION")"
gateway_dir="$(module_dir "$GATEWAY_API_MODULE" "$GATEWAY_API_VERSION")"
[[ -n "$istio_dir" && -n "$gateway_dir" ]] || { log "module download failed"; exit 1; }
cp "$istio_dir/$ISTIO_CRD_FILE" "$tmp/crds/istio.yaml"
n=0
for f in $gateway_dir/$GATEWAY_CRD_GLOB; do
	# The directory also holds a ValidatingAdmissionPolicy; keep only CRDs.
	grep -q '^kind: CustomResourceDefinition' "$f" || continue
	cp "$f" "$tmp/crds/gateway-api-$(basename "$f" | sed 's/^gateway.networking.k8s.io_//')"
	n=$((n + 1))
done
[[ $n -gt 0 ]] || { log "no Gateway API CRDs found in $gateway_dir"; exit 1; }
chmod -R u+w "$tmp/crds" # files from the module cache are read-only
rm -rf "$tmp/work"
cat >"$tmp/SOURCES" <<SRC
kubernetes k8s.io/kubernetes@$k8s_version
$(grep -v '^#' crds.lock)
SRC

# Publish atomically: a reader sees either no <key> or a complete one.
if ! mv -T "$tmp" "$out" 2>/dev/null; then
	[[ -x "$out/bin/testenv" ]] || { log "could not move build into $out"; exit 1; }
	log "another build finished first; using it"
fi
trap - EXIT
rm -rf "$tmp"
log "built $out"
echo "$out"
