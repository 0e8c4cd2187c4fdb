#!/usr/bin/env bash
# make demo: a real API server (e2e/testenv) + the real istiod (e2e/istio) with the mesh
# simulator beside it + bookinfo in sidecar mode, migrated to ambient by the operator while
# progress is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

log "building the test API server (cached after the first build)"
TESTENV_HOME=$(e2e/testenv/build.sh | tail -n 1)
log "building istiod from istio.io/istio (cached after the first build)"
MESHMIG_ISTIO_HOME=$(e2e/istio/build.sh | tail -n 1)
export MESHMIG_ISTIO_HOME
log "building meshmig, meshmig-operator and the mesh (istiod + simulator) launcher"
cargo build -q -p meshmig -p meshmig-operator -p meshmig-sim -p meshmig-e2e-harness
BIN=$ROOT/target/debug

WORK=$(mktemp -d -t meshmig-demo.XXXXXX)
PIDS=()
cleanup() {
  # Last started first: the operator and istiod stop before their API server does.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

mkdir -p "$WORK/crds"
"$BIN/meshmig-sim" sail-crds "$WORK/crds" >/dev/null
"$BIN/meshmig" crd > "$WORK/crds/meshmig.yaml"

log "starting kube-apiserver, etcd, controller-manager, scheduler and 2 nodes"
"$TESTENV_HOME/bin/testenv" up --dir "$WORK/env" --nodes 2 \
  --crd-dir "$TESTENV_HOME/crds" --crd-dir "$WORK/crds" > "$WORK/up.out" 2> "$WORK/up.err" &
PIDS+=($!)
for _ in $(seq 1 600); do
  grep -q '^READY ' "$WORK/up.out" 2>/dev/null && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$WORK/up.err" >&2; exit 1; }
  sleep 0.1
done
export KUBECONFIG=$(awk '/^READY /{print $2}' "$WORK/up.out")
kubectl version 2>/dev/null | grep -i server >&2 || true

log "starting istiod, and beside it the simulator for Sail, istio-cni, ztunnel and traffic"
"$BIN/meshmig-mesh" --kubeconfig "$KUBECONFIG" --dir "$WORK/istiod" > "$WORK/mesh.out" 2> "$WORK/mesh.log" &
PIDS+=($!)
for _ in $(seq 1 600); do
  grep -q '^READY' "$WORK/mesh.out" 2>/dev/null && break
  kill -0 "${PIDS[1]}" 2>/dev/null || { tail -n 20 "$WORK/mesh.log" >&2; exit 1; }
  sleep 0.1
done
grep -q '^READY' "$WORK/mesh.out" || { echo "istiod not ready after 60s" >&2; tail -n 20 "$WORK/mesh.log" >&2; exit 1; }
sed 's/^READY //' "$WORK/mesh.out" >&2

log "deploying bookinfo in sidecar mode"
kubectl apply -f examples/bookinfo/00-control-plane.yaml -f examples/bookinfo/10-bookinfo.yaml >/dev/null
kubectl wait --for=condition=Available deployment --all -n bookinfo --timeout=120s >/dev/null
kubectl apply -f examples/bookinfo/20-istio.yaml >/dev/null
kubectl get pods -n bookinfo

log "starting meshmig-operator"
kubectl create namespace meshmig-system >/dev/null
RUST_LOG=${RUST_LOG:-info,kube=warn} "$BIN/meshmig-operator" --namespace meshmig-system \
  --http-addr 127.0.0.1:0 > "$WORK/operator.log" 2>&1 &
PIDS+=($!)

log "the plan"
"$BIN/meshmig" plan --live --name bookinfo -n bookinfo | sed -n '1,12p'

log "applying MeshMigration bookinfo and following it"
kubectl apply -f examples/bookinfo/30-migration.yaml >/dev/null
start=$(date +%s)
if ! "$BIN/meshmig" watch bookinfo --until-done --timeout ${DEMO_TIMEOUT:-280} --color always; then
  log "the migration did not complete; operator log:"
  tail -n 40 "$WORK/operator.log" >&2
  exit 1
fi
kubectl wait --for=condition=Ready meshmigration/bookinfo --timeout=10s >/dev/null
log "done in $(( $(date +%s) - start ))s: bookinfo runs in ambient mode"
kubectl get pods -n bookinfo -o custom-columns='POD:.metadata.name,CONTAINERS:.spec.containers[*].name,REDIRECTION:.metadata.annotations.ambient\.istio\.io/redirection'
kubectl get namespace bookinfo --show-labels
kubectl get gateway,httproute,virtualservice,authorizationpolicy -n bookinfo

# DEMO_ROLLBACK=<step>|all: then roll the migration back and show the Pods it leaves.
if [ -n "${DEMO_ROLLBACK:-}" ]; then
  log "rolling back to before step $DEMO_ROLLBACK"
  "$BIN/meshmig" rollback bookinfo "$DEMO_ROLLBACK"
  # Done when the rollback asked for is RolledBack (its checkpoint passed).
  if ! "$BIN/meshmig" watch bookinfo --until-done --timeout ${DEMO_TIMEOUT:-280} --color always \
    || ! kubectl wait --for=condition=RolledBack meshmigration/bookinfo --timeout=10s >/dev/null; then
    log "the rollback did not complete; operator log:"
    tail -n 40 "$WORK/operator.log" >&2
    exit 1
  fi
  log "rolled back: every Pod as before step $DEMO_ROLLBACK"
  kubectl get pods -n bookinfo -o custom-columns='POD:.metadata.name,CONTAINERS:.spec.containers[*].name,SIDECAR:.metadata.annotations.sidecar\.istio\.io/status,REDIRECTION:.metadata.annotations.ambient\.istio\.io/redirection'
  kubectl get namespace bookinfo --show-labels
fi
