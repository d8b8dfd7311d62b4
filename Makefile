# make demo  — a local cluster with a FUSE mount on a sample dataset: cold and warm reads
# make test  — lint, type-check, the test suites and the Kubernetes tests (what CI runs, with make test-slow)
# make test-slow / make reliability — the fault scenarios and the soak; writes docs/reliability.md
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test check tests k8s-test test-slow reliability bootstrap bench clean
SOAK_SECONDS ?= 60

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m bench.demo

# make bench — the benchmark harness; BENCH_ARGS=--quick for the short (CI smoke) run
bench: bootstrap
	$(PY) -m bench $(BENCH_ARGS)

check: bootstrap
	$(VENV)/bin/ruff format --check fluidcache tests bench k8s
	$(VENV)/bin/ruff check fluidcache tests bench k8s
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

tests: bootstrap
	$(PY) -m pytest -q -m "not reliability"

# Fault scenarios and the soak (SOAK_SECONDS, default 60); regenerates docs/reliability.md
test-slow: bootstrap
	$(PY) -m pytest -q -m reliability --soak-seconds=$(SOAK_SECONDS) \
		--reliability-report=docs/reliability.md

reliability: test-slow

# The control plane (etcd, kube-apiserver, -scheduler, -controller-manager, kwok, kubectl) built
# from the Go module proxy once into ~/.cache/fluidcache (about 25 min on 2 cores the first
# time, 0.1 s after), then the CRDs and the controller against it
k8s-test: bootstrap
	bash k8s/testenv/build.sh
	$(PY) -m pytest -q k8s/testenv/tests

test: check tests k8s-test

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
