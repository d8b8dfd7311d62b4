# make demo  — a local cluster with a FUSE mount on a sample dataset: cold and warm reads
# make test  — lint, type-check and run the test suites (what CI runs)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test check tests bootstrap bench clean

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
	$(PY) -m pytest -q

test: check tests

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
