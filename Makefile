# make demo  — a local cluster with a FUSE mount on a sample dataset: cold and warm reads
# make test  — lint, type-check and run the test suites (what CI runs, with make test-slow)
# make test-slow / make reliability — the fault scenarios and the soak; writes docs/reliability.md
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test check tests test-slow reliability bootstrap bench clean
SOAK_SECONDS ?= 60

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m bench.demo

# make bench — the benchmark harness; BENCH_ARGS=--quick for the short (CI smoke) run
bench: bootstrap
	$(PY) -m bench $(BENCH_ARGS)

check: bootstrap
	$(VENV)/bin/ruff format --check fluidcache tests bench
	$(VENV)/bin/ruff check fluidcache tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

tests: bootstrap
	$(PY) -m pytest -q -m "not reliability"

# Fault scenarios and the soak (SOAK_SECONDS, default 60); regenerates docs/reliability.md
test-slow: bootstrap
	$(PY) -m pytest -q -m reliability --soak-seconds $(SOAK_SECONDS) \
		--reliability-report docs/reliability.md

reliability: test-slow

test: check tests

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
