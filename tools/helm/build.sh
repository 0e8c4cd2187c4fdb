#!/usr/bin/env bash
# Builds the real `helm` CLI (helm.sh/helm/v3/cmd/helm, the version pinned in go.mod as a
# `tool`) into a cache directory outside the repository, keyed by the content of its inputs.
#
#   HELM=$(tools/helm/build.sh | tail -n 1)
#   "$HELM" template meshmig charts/meshmig
#
# Layout: ${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/helm/<key>/bin/helm
# The last line on stdout is the absolute path of the helm binary; progress goes to stderr.
# A warm call only hashes its inputs. Upgrade with:
#   (cd tools/helm && go get -tool helm.sh/helm/v3/cmd/helm@vX.Y.Z && go mod tidy)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

log() { echo "build.sh: $*" >&2; }

# The key covers everything that determines the output, including the Go toolchain, and
# nothing else.
key="$(
	{
		for f in go.mod go.sum build.sh $(find . -name '*.go' -not -path './.*' | LC_ALL=C sort); do
			printf '== %s\n' "$f"
			cat "$f"
		done
		go env GOVERSION GOOS GOARCH
	} | sha256sum | cut -c1-16
)"
cache="${MESHMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshmig}/helm"
out="$cache/$key"
if [[ -x "$out/bin/helm" ]]; then
	echo "$out/bin/helm"
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

# Version stamps as helm's own Makefile sets them. The proxy serves no git metadata, so the
# commit is left empty. The Kubernetes version is what `helm template` and `helm lint`
# assume without a cluster (.Capabilities.KubeVersion, deprecation checks).
helm_version="$(go list -m -f '{{.Version}}' helm.sh/helm/v3)"
k8s_version="$(go list -m -f '{{.Version}}' k8s.io/client-go)" # v0.MINOR.PATCH
k8s_minor="${k8s_version#v0.}"
k8s_minor="${k8s_minor%%.*}"
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitCommit="
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

log "building helm $helm_version (Kubernetes 1.$k8s_minor); a cold build takes a few minutes"
go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/bin/helm" helm.sh/helm/v3/cmd/helm
"$tmp/bin/helm" version --short >/dev/null
cat >"$tmp/SOURCES" <<SRC
helm helm.sh/helm/v3@$helm_version
kubernetes (client-go) k8s.io/client-go@$k8s_version
SRC

# Publish atomically: a reader sees either no <key> or a complete one.
if ! mv -T "$tmp" "$out" 2>/dev/null; then
	[[ -x "$out/bin/helm" ]] || { log "could not move build into $out"; exit 1; }
	log "another build finished first; using it"
fi
trap - EXIT
rm -rf "$tmp"
log "built $out/bin/helm"
echo "$out/bin/helm"
