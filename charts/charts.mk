# Helm chart (charts/meshmig) and the plain manifests rendered from it (deploy/meshmig.yaml).
# Included from the top-level Makefile; see docs/install.md.
#
# helm is built from source at the version pinned in tools/helm/go.mod (cached outside the
# repository, like testenv), so rendering is the same on every machine. HELM=/path/to/helm
# overrides it (then deploy/meshmig.yaml may differ if the version differs).

HELM_BUILD := tools/helm/build.sh
CHART := charts/meshmig
CHART_CI_VALUES := $(CHART)/ci/nondefault-values.yaml

# The helm binary: the last line of build.sh, run at most once per make run and only when a
# recipe needs it (a warm build.sh only hashes its inputs; a cold one takes minutes).
ifeq ($(strip $(HELM)),)
HELM = $(eval HELM := $$(shell bash $(HELM_BUILD) | tail -n 1))$(HELM)
endif

.PHONY: helm generate-chart chart-lint check-chart

helm: ## Build helm from source (cached outside the repo; the first build takes minutes)
	bash $(HELM_BUILD)

generate-chart: ## Copy the CRD into the chart and render deploy/meshmig.yaml
	@test -x '$(HELM)' || { echo "no helm binary (see the output of $(HELM_BUILD) above)"; exit 1; }
	HELM='$(HELM)' bash deploy/generate.sh

chart-lint: ## helm lint --strict, and render the chart with defaults, a ServiceMonitor and non-default values
	@test -x '$(HELM)' || { echo "no helm binary (see the output of $(HELM_BUILD) above)"; exit 1; }
	'$(HELM)' lint $(CHART) --strict --namespace meshmig-system
	'$(HELM)' lint $(CHART) --strict --namespace meshmig-system -f $(CHART_CI_VALUES)
	@set -eu; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	helm='$(HELM)'; \
	"$$helm" template meshmig $(CHART) -n meshmig-system --include-crds >"$$tmp/default.yaml"; \
	if grep -q '^kind: ServiceMonitor' "$$tmp/default.yaml"; then echo "chart-lint: the default rendering has a ServiceMonitor"; exit 1; fi; \
	"$$helm" template meshmig $(CHART) -n meshmig-system --set serviceMonitor.enabled=true >"$$tmp/sm.yaml"; \
	grep -q '^kind: ServiceMonitor' "$$tmp/sm.yaml" || { echo "chart-lint: serviceMonitor.enabled=true renders no ServiceMonitor"; exit 1; }; \
	"$$helm" template other $(CHART) -n tools -f $(CHART_CI_VALUES) >"$$tmp/custom.yaml"; \
	for want in 'kind: ServiceMonitor' 'name: migrator' 'image: "registry.example.com/platform/meshmig-operator@sha256:' \
	  'value: "false"' 'priorityClassName: system-cluster-critical' 'containerPort: 9090' '--log-format=text'; do \
	  grep -qF -- "$$want" "$$tmp/custom.yaml" || { echo "chart-lint: non-default values: '$$want' missing"; exit 1; }; \
	done; \
	if grep -q '^kind: Role$$' "$$tmp/custom.yaml"; then echo "chart-lint: leaderElection.enabled=false still renders the Lease Role"; exit 1; fi; \
	"$$helm" template meshmig $(CHART) -n meshmig-system --set rbac.create=false,serviceAccount.create=false,serviceAccount.name=byo >"$$tmp/norbac.yaml"; \
	if grep -Eq '^kind: (ClusterRole|ClusterRoleBinding|Role|RoleBinding|ServiceAccount)$$' "$$tmp/norbac.yaml"; then echo "chart-lint: rbac.create=false still renders RBAC"; exit 1; fi; \
	if "$$helm" template meshmig $(CHART) --set leaderElection.enabled=false >/dev/null 2>"$$tmp/err"; then \
	  echo "chart-lint: replicas 2 without leader election must not render"; exit 1; fi; \
	grep -q 'needs leaderElection.enabled' "$$tmp/err"; \
	echo "chart-lint: ok (defaults, serviceMonitor, non-default values, no RBAC, invalid values rejected)"

check-chart: generate-chart ## Fail if charts/ or deploy/ are stale (run 'make generate-chart' and commit)
	@if ! git diff --quiet -- charts deploy || test -n "$$(git ls-files --others --exclude-standard -- charts deploy)"; then \
	  echo "charts/ or deploy/ are stale; run 'make generate-chart' and commit:"; \
	  git --no-pager diff --stat -- charts deploy; git ls-files --others --exclude-standard -- charts deploy; exit 1; fi
