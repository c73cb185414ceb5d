# SipMesh developer entry points. Everything a target needs is installed by the target itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every dependency is pinned with hashes in requirements.lock (made by `make lock` from
# pyproject.toml's ranges): a fresh machine installs exactly what CI tested. pip itself too.
LOCK   := requirements.lock
PIP_VERSION := 26.3

.PHONY: run test test-fast bench fuzz lint proto venv peers lock clean

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

## make lock: re-resolve pyproject.toml's ranges into requirements.lock (a deliberate commit).
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes \
	  --python-version 3.11 --no-header --quiet -o $(LOCK)

# Debian peers (sipp, kamailio, ...) and the local PostgreSQL/Redis/RabbitMQ the tests talk to.
peers:
	bash tests/peers/ensure.sh

## make run: the whole mesh in the foreground on embedded defaults.
run: $(STAMP)
	$(VENV)/bin/sipmesh up

## make test: every test; pytest's "no tests ran" (exit 5) is a failure.
test: $(STAMP) peers
	@$(PY) -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

## make bench: benchmarks (not tests); each prints its figures and ratios.
bench: $(STAMP) peers
	@set -e; for f in tests/bench/bench_*.py; do echo "== $$f"; $(PY) $$f; done

## make fuzz: a long seeded fuzzing run of a real edge over UDP and TCP (uvloop); MESSAGES=n,
## SEED=n to repeat a run (the suite in `make test` runs 3,000 messages with a fixed seed).
fuzz: $(STAMP) peers
	$(PY) tests/integration/edge/fuzz_edge.py --messages $(or $(MESSAGES),200000) $(if $(SEED),--seed $(SEED))

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared services gateway contracts

proto: $(STAMP)
	$(PY) -m contracts.build

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
