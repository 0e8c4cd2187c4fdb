# End-to-end test environment: a real Kubernetes control plane (e2e/testenv), the real
# istiod and Istio's own code as a test oracle (both built by e2e/istio), and the mesh
# simulator (e2e/sim) for what cannot run here. Included from the top-level Makefile; see
# e2e/README.md.

E2E_DIR := target/testenv
TESTENV_BUILD := e2e/testenv/build.sh
ISTIO_BUILD := e2e/istio/build.sh
CARGO ?= cargo
MESHMIG_SIM := target/debug/meshmig-sim
MESHMIG_MESH := target/debug/meshmig-mesh

# Directory of the testenv build (bin/testenv, crds/). build.sh prints it as its last line
# and is cheap when warm (it only hashes its inputs), but a cold build takes minutes, so it
# runs only when a recipe needs the value, at most once per make run. A MESHMIG_TESTENV_HOME
# from the environment is used as is.
ifeq ($(strip $(MESHMIG_TESTENV_HOME)),)
testenv_home = $(eval testenv_home := $$(shell bash $(TESTENV_BUILD) | tail -n 1))$(testenv_home)
else
testenv_home := $(MESHMIG_TESTENV_HOME)
endif

# The harness reuses this build instead of running build.sh in every test binary. (Empty if
# the build failed: the tests then run build.sh themselves and report why.)
test: export MESHMIG_TESTENV_HOME = $(testenv_home)

# Directory of the e2e/istio build (bin/pilot-discovery, bin/meshmig-istio, istiod/), found
# the same way: istiod of the harness, `make cluster` and the benchmarks, and the probe
# judge and oracle tests.
ifeq ($(strip $(MESHMIG_ISTIO_HOME)),)
istio_home = $(eval istio_home := $$(shell bash $(ISTIO_BUILD) | tail -n 1))$(istio_home)
else
istio_home := $(MESHMIG_ISTIO_HOME)
endif

test istio-oracle cluster bench: export MESHMIG_ISTIO_HOME = $(istio_home)

.PHONY: testenv istio-oracle cluster cluster-down

testenv: ## Build the test API server (cached outside the repo; the first build takes minutes)
	bash $(TESTENV_BUILD)

istio-oracle: ## Build meshmig-istio (Istio's code; cached outside the repo) and run the oracle tests
	@[[ -x "$$MESHMIG_ISTIO_HOME/bin/meshmig-istio" ]] || { echo "no meshmig-istio build (see the output of $(ISTIO_BUILD) above)"; exit 1; }
	@echo "meshmig-istio: $$MESHMIG_ISTIO_HOME/bin/meshmig-istio"
	$(CARGO) test -p meshmig-istio-oracle

cluster: ## Start a 2-node test cluster with istiod and the mesh simulator in the background
	@if [[ -f $(E2E_DIR)/testenv.pid ]] && kill -0 "$$(cat $(E2E_DIR)/testenv.pid)" 2>/dev/null; then \
	  echo "a cluster is already running (pid $$(cat $(E2E_DIR)/testenv.pid)); run 'make cluster-down' first"; exit 1; \
	fi
	$(CARGO) build -q -p meshmig-sim -p meshmig-e2e-harness -p meshmig
	@set -euo pipefail; \
	home='$(testenv_home)'; \
	if [[ ! -x "$$home/bin/testenv" ]]; then echo "no testenv build (see the output of $(TESTENV_BUILD) above)"; exit 1; fi; \
	if [[ ! -x "$$MESHMIG_ISTIO_HOME/bin/pilot-discovery" ]]; then echo "no istiod build (see the output of $(ISTIO_BUILD) above)"; exit 1; fi; \
	rm -rf $(E2E_DIR); mkdir -p $(E2E_DIR); \
	$(MESHMIG_SIM) sail-crds $(E2E_DIR)/sail-crds >/dev/null; \
	target/debug/meshmig crd > $(E2E_DIR)/sail-crds/meshmig.io_meshmigrations.yaml; \
	nohup "$$home/bin/testenv" up --dir $(E2E_DIR)/env --nodes 2 \
	  --crd-dir "$$home/crds" --crd-dir $(E2E_DIR)/sail-crds \
	  >$(E2E_DIR)/testenv.out 2>$(E2E_DIR)/testenv.err </dev/null & \
	echo $$! >$(E2E_DIR)/testenv.pid; \
	echo "waiting for the API server (logs: $(E2E_DIR)/env/*.log)"; \
	for i in $$(seq 1 1800); do \
	  grep -q '^READY ' $(E2E_DIR)/testenv.out && break; \
	  if ! kill -0 "$$(cat $(E2E_DIR)/testenv.pid)" 2>/dev/null; then cat $(E2E_DIR)/testenv.err; rm -f $(E2E_DIR)/testenv.pid; exit 1; fi; \
	  sleep 0.1; \
	done; \
	grep -q '^READY ' $(E2E_DIR)/testenv.out || { echo "testenv not ready after 180s"; exit 1; }; \
	cp $(E2E_DIR)/env/kubeconfig $(E2E_DIR)/kubeconfig; \
	echo "waiting for istiod (log: $(E2E_DIR)/istiod/istiod.log)"; \
	nohup $(MESHMIG_MESH) --kubeconfig $(E2E_DIR)/kubeconfig --dir $(E2E_DIR)/istiod \
	  >$(E2E_DIR)/mesh.out 2>$(E2E_DIR)/mesh.log </dev/null & \
	echo $$! >$(E2E_DIR)/mesh.pid; \
	for i in $$(seq 1 1200); do \
	  grep -q '^READY' $(E2E_DIR)/mesh.out && break; \
	  if ! kill -0 "$$(cat $(E2E_DIR)/mesh.pid)" 2>/dev/null; then tail -20 $(E2E_DIR)/mesh.log; rm -f $(E2E_DIR)/mesh.pid; exit 1; fi; \
	  sleep 0.1; \
	done; \
	grep -q '^READY' $(E2E_DIR)/mesh.out || { echo "meshmig-mesh not ready after 120s"; tail -20 $(E2E_DIR)/mesh.log; exit 1; }; \
	echo; \
	echo "cluster ready (2 nodes, Istio/Gateway API/Sail CRDs, $$(sed -n 's/^READY //p' $(E2E_DIR)/mesh.out), mesh simulator):"; \
	echo "  export KUBECONFIG=$(CURDIR)/$(E2E_DIR)/kubeconfig"; \
	echo "  kubectl get nodes"; \
	echo "  kubectl apply -f examples/bookinfo/00-control-plane.yaml -f examples/bookinfo/10-bookinfo.yaml"; \
	echo "logs: $(E2E_DIR)/mesh.log (simulator), $(E2E_DIR)/istiod/istiod.log, $(E2E_DIR)/env/*.log; stop with: make cluster-down"

cluster-down: ## Stop the cluster started by `make cluster` (istiod and the simulator first, then the API server)
	@for name in mesh testenv; do \
	  pidfile=$(E2E_DIR)/$$name.pid; \
	  [[ -f $$pidfile ]] || continue; \
	  pid=$$(cat $$pidfile); \
	  if kill -TERM "$$pid" 2>/dev/null; then \
	    for i in $$(seq 1 150); do kill -0 "$$pid" 2>/dev/null || break; sleep 0.1; done; \
	    if kill -0 "$$pid" 2>/dev/null; then kill -KILL "$$pid"; fi; \
	    echo "stopped $$name (pid $$pid)"; \
	  fi; \
	  rm -f $$pidfile; \
	done
