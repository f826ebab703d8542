# One command surface for people and CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install install-system services test test-fast lint bench-eval clean help

help:
	@echo "make install         virtualenv in $(VENV) with hpcq and its dev tools"
	@echo "make test            install what is missing, check services, run the whole suite"
	@echo "make lint            ruff and mypy --strict"
	@echo "make bench-eval      evaluation-engine benchmark -> bench/results/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The core and dev tools only: never a bare `torch` (several GB of CUDA wheels).
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# System packages the sandbox needs (Debian). Needs root; harmless when already there.
install-system:
	@bash ops/install-system.sh

services:
	@bash ops/check-services.sh

test: install install-system services
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow and not broker"

lint: install
	$(VENV)/bin/ruff check hpcq bridges tests bench
	$(VENV)/bin/ruff format --check hpcq bridges tests bench
	$(VENV)/bin/mypy

bench-eval: install install-system
	$(PY) bench/bench_eval.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# ---- pipeline (issue 3: RabbitMQ producer/consumer, docs/pipeline.md) -----------------
.PHONY: run-consumer run-producer bench-pipeline
NAMESPACE ?= $(or $(HPCQ_NAMESPACE),hpcq)
CONSUMER_ARGS ?=

# One consumer for this node: slots from the allowed cores, drains on SIGTERM/SIGUSR1.
run-consumer: install install-system services
	$(PY) -m hpcq --log-level info consumer --namespace $(NAMESPACE) $(CONSUMER_ARGS)

# Until the GRPO producer lands: submit the honest sample kernels and print the results.
run-producer: install services
	$(PY) -m hpcq submit --namespace $(NAMESPACE) --json tests/corpus/honest/*.c

bench-pipeline: install install-system services
	$(PY) bench/bench_pipeline.py
# ---- end pipeline ----------------------------------------------------------------------

# ---- SQD controller (docs/sqd.md) --------------------------------------------------------
.PHONY: run-sqd
SQD_ARGS ?=
run-sqd: install services
	$(PY) -m hpcq --log-level info sqd --namespace $(NAMESPACE) $(SQD_ARGS)
