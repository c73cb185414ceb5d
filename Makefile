# SipMesh developer entry points. Everything a target needs is installed by the target itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint proto venv peers clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict shared/sip

proto: $(STAMP)
	$(PY) -m contracts.build

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
