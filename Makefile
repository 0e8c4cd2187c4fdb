# meshmig — see README.md. `make test` is what CI runs; `make demo` is the main job.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
MESHMIG := target/debug/meshmig

.PHONY: help build test lint fmt generate check-generated demo plan

help: ## List targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## Build every crate
	$(CARGO) build --workspace --all-targets

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

generate: ## Regenerate checked-in files (crds/, docs/findings.md, chart CRDs, deploy/)
	$(CARGO) build -q -p meshmig
	$(MESHMIG) crd > crds/meshmig.io_meshmigrations.yaml
	$(MESHMIG) findings --markdown > docs/findings.md
	$(MAKE) --no-print-directory generate-chart

check-generated: generate ## Fail if generated files are stale
	@if ! git diff --quiet -- crds docs/findings.md charts deploy; then \
	  echo "generated files are stale; run 'make generate' and commit:"; git --no-pager diff --stat -- crds docs/findings.md charts deploy; exit 1; fi

test: lint check-generated chart-lint ## Run every test (what CI runs)
	$(CARGO) test --workspace --all-targets

demo: ## Main job: migrate the embedded bookinfo on a local API server, printing progress
	scripts/demo.sh

install: ## Install meshmig and the kubectl plugin (kubectl-meshmig) into ~/.cargo/bin
	$(CARGO) install --locked --path crates/cli
	ln -sf meshmig "$${CARGO_HOME:-$$HOME/.cargo}/bin/kubectl-meshmig"
	@echo "installed: meshmig, kubectl meshmig"

plan: ## The offline plan for the embedded bookinfo
	$(CARGO) run -q -p meshmig -- plan

include e2e/e2e.mk
include charts/charts.mk
include bench/bench.mk
