# SipMesh developer entry points. Everything a target needs is installed by the target itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every dependency is pinned with hashes in requirements.lock (made by `make lock` from
# pyproject.toml's ranges): a fresh machine installs exactly what CI tested. pip itself too.
LOCK   := requirements.lock
PIP_VERSION := 26.3

.PHONY: run test test-fast test-compiled compiled pure bench fuzz lint hooks proto venv peers lock clean

# The first install takes a few minutes and pip runs quietly: one line per step says where
# it is (`make run` on a fresh clone prints them before the mesh's own lines).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || { echo "sipmesh setup [1/4]: creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV); }
	@echo "sipmesh setup [2/4]: pip $(PIP_VERSION)"
	@$(PY) -m pip install -q pip==$(PIP_VERSION)
	@echo "sipmesh setup [3/4]: $$(grep -c '==' $(LOCK)) pinned packages from $(LOCK)" \
	  "(first time: a few minutes)"
	@$(PY) -m pip install -q --require-hashes -r $(LOCK)
	@echo "sipmesh setup [4/4]: sipmesh itself (editable)"
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "sipmesh setup: done ($(VENV))"

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

## make test-fast: the edit-test loop: unit and contract tiers only (sans-IO cores on fake
## clocks, one suite per port over its backends); no sipp/phones/processes, well under a minute.
test-fast: $(STAMP)
	@$(PY) -m pytest -q tests/unit tests/contracts

## make compiled: the sans-IO core (shared/sip, shared/transaction, the edge's core) compiled
## with mypyc into C extensions beside the sources (~2-3 min; needs a C compiler and Python's
## headers); every process then runs it, `sipmesh --version` says so. Optional: without it,
## or once a source is edited after the build, the same code runs as pure Python
## (shared/compiled.py). `make pure` removes the build.
compiled: $(STAMP)
	$(PY) -m shared.build_compiled

pure: $(STAMP)
	$(PY) -m shared.build_compiled --clean

## make test-compiled: the unit tiers of the compiled packages run against the compiled build
## (SIPMESH_COMPILED=require: an ImportError rather than a quiet pure-Python run).
test-compiled: compiled
	SIPMESH_COMPILED=require $(PY) -m pytest -q tests/unit/sip tests/unit/transaction tests/unit/edge

## make bench: benchmarks (not tests); each prints its figures and ratios. The core is
## compiled first when a compiler is there (pure Python otherwise: the benches say which).
bench: $(STAMP) peers
	@$(PY) -m shared.build_compiled || echo "make bench: no compiled core, pure Python runs"
	@set -e; for f in tests/bench/bench_*.py; do echo "== $$f"; $(PY) $$f; done

## make fuzz: a long seeded fuzzing run of a real edge over UDP and TCP (uvloop); MESSAGES=n,
## SEED=n to repeat a run (the suite in `make test` runs 3,000 messages with a fixed seed).
fuzz: $(STAMP) peers
	$(PY) tests/integration/edge/fuzz_edge.py --messages $(or $(MESSAGES),200000) $(if $(SEED),--seed $(SEED))

## make lint: ruff, mypy --strict over all the code and its tests (generated code excepted),
## and the commit-message rule on this branch's own commits.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy sipmesh shared services gateway contracts examples tests .ci/commit_msg.py
	@if git rev-parse -q --verify main >/dev/null; then \
	  $(PY) .ci/commit_msg.py --range main..HEAD && echo "commit messages of main..HEAD: ok"; \
	else echo "commit messages: no main branch in this clone, not checked"; fi

## make hooks: pre-commit runs ruff before each commit and checks each commit message.
hooks: $(STAMP)
	$(VENV)/bin/pre-commit install --hook-type pre-commit --hook-type commit-msg

proto: $(STAMP)
	$(PY) -m contracts.build

clean:
	@if [ -x $(PY) ]; then $(PY) -m shared.build_compiled --clean; fi
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
