#!/usr/bin/env bash
# Functional smoke test of testenv, driven with kubectl:
#
#   e2e/testenv/smoke.sh            # builds (or reuses) the cached binary first
#   TESTENV_HOME=... e2e/testenv/smoke.sh
#
# Prints one line per check and a closing "N passed, N failed" line; exits
# non-zero if any check failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v kubectl >/dev/null || { echo "smoke.sh: kubectl is required" >&2; exit 1; }
TESTENV_HOME="${TESTENV_HOME:-$("$here/build.sh" | tail -n1)}"
bin="$TESTENV_HOME/bin/testenv"

work="$(mktemp -d)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# up DIR ARGS...: starts an environment, sets UP_PID, waits for READY.
up() {
	local dir="$1"
	shift
	local t0=$SECONDS
	"$bin" up --dir "$dir" "$@" >"$dir.out" 2>"$dir.err" &
	UP_PID=$!
	pids+=("$UP_PID")
	while ! grep -q '^READY ' "$dir.out" 2>/dev/null; do
		if ! kill -0 "$UP_PID" 2>/dev/null || ((SECONDS - t0 > 90)); then
			echo "testenv up failed:" >&2
			cat "$dir.err" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "# $dir ready in $((SECONDS - t0))s"
}

passed=0
failed=0
check() {
	local name="$1"
	shift
	if "$@" >"$work/check.log" 2>&1; then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "FAIL - $name"
		sed 's/^/    /' "$work/check.log"
	fi
}

# until_true SECONDS CMD...: retries CMD until it succeeds or time runs out.
until_true() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

env_dir="$work/env"
mkdir -p "$env_dir"
up "$env_dir" --nodes 2 --crd-dir "$TESTENV_HOME/crds"
export KUBECONFIG="$env_dir/kubeconfig"

server_version() {
	local want
	want="$("$bin" version)"
	kubectl version -o json | grep -q "\"gitVersion\": \"$want\""
}
check "server reports the real version" server_version

deployment() {
	kubectl create deployment web --image=nginx:1.27 --replicas=3
	kubectl rollout status deployment/web --timeout=60s
	kubectl wait deployment/web --for=condition=Available --timeout=30s
	[[ "$(kubectl get pods -l app=web -o jsonpath='{range .items[*]}{.status.phase}/{.status.conditions[?(@.type=="Ready")].status} {end}')" == "Running/True Running/True Running/True " ]]
}
check "Deployment: 3 pods Running and Ready, Available" deployment

rollout_restart() {
	local before
	before="$(kubectl get pods -l app=web -o name | sort)"
	kubectl rollout restart deployment/web
	kubectl rollout status deployment/web --timeout=60s
	until_true 30 bash -c "[[ \$(kubectl get pods -l app=web -o name | wc -l) == 3 ]]"
	[[ -z "$(comm -12 <(echo "$before") <(kubectl get pods -l app=web -o name | sort))" ]]
}
check "rollout restart replaces all pods" rollout_restart

daemonset() {
	kubectl apply -f - <<-EOF
	apiVersion: apps/v1
	kind: DaemonSet
	metadata: {name: agent}
	spec:
	  selector: {matchLabels: {app: agent}}
	  template:
	    metadata: {labels: {app: agent}}
	    spec: {containers: [{name: agent, image: agent}]}
	EOF
	kubectl rollout status daemonset/agent --timeout=60s
	[[ "$(kubectl get daemonset agent -o jsonpath='{.status.numberReady}')" == 2 ]]
	[[ "$(kubectl get pods -l app=agent -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)" == 2 ]]
}
check "DaemonSet: one ready pod on each of 2 nodes" daemonset

statefulset() {
	kubectl apply -f - <<-EOF
	apiVersion: apps/v1
	kind: StatefulSet
	metadata: {name: db}
	spec:
	  replicas: 2
	  serviceName: db
	  selector: {matchLabels: {app: db}}
	  template:
	    metadata: {labels: {app: db}}
	    spec: {containers: [{name: db, image: postgres}]}
	EOF
	kubectl rollout status statefulset/db --timeout=60s
	[[ "$(kubectl get statefulset db -o jsonpath='{.status.readyReplicas}')" == 2 ]]
}
check "StatefulSet of 2 becomes ready" statefulset

job() {
	kubectl create job once --image=busybox
	kubectl wait job/once --for=condition=Complete --timeout=60s
	[[ "$(kubectl get pods -l job-name=once -o jsonpath='{.items[0].status.phase}')" == Succeeded ]]
}
check "Job completes" job

probe_pod() {
	kubectl run probe --image=curl --restart=Never --labels=meshmig.io/probe=x
	kubectl wait pod/probe --for=jsonpath='{.status.phase}'=Running --timeout=30s
	[[ -n "$(kubectl get pod probe -o jsonpath='{.status.podIP}')" ]]
	sleep 3
	[[ "$(kubectl get pod probe -o jsonpath='{.status.phase}')" == Running ]]
}
check "meshmig.io/probe pod stays Running with a pod IP" probe_pod

delete_pod() {
	kubectl run gone --image=x
	kubectl wait pod/gone --for=condition=Ready --timeout=30s
	timeout 10 kubectl delete pod gone --wait=true
	! kubectl get pod gone
}
check "deleted pod disappears promptly" delete_pod

crds() {
	local have
	have="$(kubectl get crd -o name)"
	for c in authorizationpolicies.security.istio.io peerauthentications.security.istio.io \
		virtualservices.networking.istio.io destinationrules.networking.istio.io \
		telemetries.telemetry.istio.io wasmplugins.extensions.istio.io \
		gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io; do
		grep -qx "customresourcedefinition.apiextensions.k8s.io/$c" <<<"$have" || { echo "missing $c"; return 1; }
	done
}
check "Istio and Gateway API CRDs installed" crds

rbac() {
	kubectl create serviceaccount nobody
	local token out
	token="$(kubectl create token nobody)"
	if out="$(kubectl --token="$token" get pods 2>&1)"; then
		echo "token without permissions could list pods"
		return 1
	fi
	grep -q Forbidden <<<"$out"
	kubectl get pods >/dev/null
}
check "ServiceAccount token without RBAC is Forbidden, admin is not" rbac

webhook() {
	local ca out
	ca="$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
	kubectl apply -f - <<-EOF
	apiVersion: admissionregistration.k8s.io/v1
	kind: MutatingWebhookConfiguration
	metadata: {name: dead}
	webhooks:
	- name: dead.smoke.meshmig.io
	  clientConfig: {url: "https://127.0.0.1:1/mutate", caBundle: "$ca"}
	  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}]
	  failurePolicy: Fail
	  sideEffects: None
	  admissionReviewVersions: [v1]
	  timeoutSeconds: 5
	EOF
	if out="$(kubectl run blocked --image=x 2>&1)"; then
		echo "pod was created despite a failing webhook"
		return 1
	fi
	grep -q 'failed calling webhook "dead.smoke.meshmig.io"' <<<"$out"
	kubectl delete mutatingwebhookconfiguration dead
}
check "url webhook with failurePolicy Fail is called" webhook

egress_guard() {
	local out
	if out="$(kubectl logs probe 2>&1)"; then
		return 1
	fi
	grep -q "testenv has no cluster network" <<<"$out"
}
check "API server connections into the fake cluster network are refused" egress_guard

no_children_after() { # $1: signal
	local pid=$UP_PID
	kill "-$1" "$pid"
	wait "$pid" 2>/dev/null || true
	until_true 5 no_processes
}
no_processes() { ! pgrep -f -- "${env_dir}(/| |\$)" >/dev/null; }
check "SIGTERM stops everything" no_children_after TERM

env2="$work/env2"
mkdir -p "$env2"
up "$env2"
env_dir="$env2"
check "SIGKILL of up leaves no processes behind" no_children_after KILL

echo "$passed passed, $failed failed"
((failed == 0))
