# `make bench`: meshmig's benchmarks (issue 7). Included from the top-level Makefile.
# Builds what it needs (release meshmig-bench and meshmig-operator, the test API server via
# e2e/testenv/build.sh, ingress2gateway via bench/ingress2gateway/build.sh; all cached), runs
# the offline and cluster benchmarks, prints the table and regenerates BENCHMARKS.md. Results
# of each part are in target/bench/*.json; logs of the operator runs in target/bench/.
# A part that fails is reported as "not measured" and makes the target fail after the report.

BENCH_DIR := target/bench
BENCH_BIN := target/release/meshmig-bench
# Knobs (defaults are what BENCHMARKS.md describes).
# A 5,000-namespace run takes 10–25 s and about 4 GiB (see BENCHMARKS.md).
BENCH_OFFLINE_ARGS ?= --sizes 100,1000,5000 --runs 3
BENCH_RSS_ARGS ?=
BENCH_MIGRATE_ARGS ?=

.PHONY: bench

# Two cargo builds, not one: building both packages in one invocation unifies their
# features differently and would rebuild the binaries cached by single-package builds.

bench: ## Benchmarks (planner, conversion vs ingress2gateway, operator at scale); writes BENCHMARKS.md
	@set -euo pipefail; \
	start=$$(date +%s); \
	$(CARGO) build --release -q -p meshmig-bench; \
	$(CARGO) build --release -q -p meshmig-operator; \
	built=$$(date +%s); \
	mkdir -p $(BENCH_DIR); \
	rm -f $(BENCH_DIR)/offline.json $(BENCH_DIR)/cluster-rss.json $(BENCH_DIR)/cluster-migrate.json; \
	status=0; \
	i2gw=$$(bash bench/ingress2gateway/build.sh | tail -n 1) || { echo "bench: ingress2gateway build failed; comparison skipped"; i2gw=; status=1; }; \
	home='$(testenv_home)'; \
	if [[ -x "$$home/bin/testenv" ]]; then export MESHMIG_TESTENV_HOME="$$home"; fi; \
	echo "bench: offline (planner, conversion)"; \
	$(BENCH_BIN) offline --work-dir $(BENCH_DIR) --results $(BENCH_DIR)/offline.json \
	  $${i2gw:+--i2gw-home "$$i2gw"} $(BENCH_OFFLINE_ARGS) || status=1; \
	echo "bench: operator memory with 20,000 Pods"; \
	$(BENCH_BIN) cluster-rss --work-dir $(BENCH_DIR) --results $(BENCH_DIR)/cluster-rss.json $(BENCH_RSS_ARGS) || status=1; \
	echo "bench: migration of 20 namespaces"; \
	$(BENCH_BIN) migrate --work-dir $(BENCH_DIR) --results $(BENCH_DIR)/cluster-migrate.json $(BENCH_MIGRATE_ARGS) || status=1; \
	echo; \
	$(BENCH_BIN) report --started "$$start" --built "$$built" --out BENCHMARKS.md; \
	exit $$status
