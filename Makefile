# One command surface for people and CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install install-ml install-system services test test-fast lint bench-eval clean help

help:
	@echo "make demo            the whole loop on this machine: small model, consumers, GRPO, report"
	@echo "make install         virtualenv in $(VENV) with hpcq and its dev tools"
	@echo "make install-ml      ... plus the producer side (torch CPU build, transformers, trl, peft)"
	@echo "make test            install what is missing, check services, run the whole suite"
	@echo "make lint            ruff, mypy --strict and the import contracts (lint-imports)"
	@echo "make bench-eval      evaluation-engine benchmark -> bench/results/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The core, dev tools and the optional extras the tests exercise (telemetry, plots);
	# never a bare `torch` (several GB of CUDA wheels).
	$(PY) -m pip install -q -e '.[dev,mqtt,prometheus,watch,plots]'
	touch $(STAMP)

install: $(STAMP)

# The producer side. torch first, pinned: `pip install torch==2.13.0` takes the CPU build
# (a bare `torch` requirement would pull several GB of CUDA wheels); the `ml` extra's
# range is then already satisfied, and the check below fails loudly if it was replaced.
ML_STAMP := $(VENV)/.installed-ml
$(ML_STAMP): $(STAMP)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ml]'
	$(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'torch was replaced: ' + torch.__version__)"
	touch $(ML_STAMP)
install-ml: $(ML_STAMP)

# System packages the sandbox needs (Debian). Needs root; harmless when already there.
install-system:
	@bash ops/install-system.sh

services:
	@bash ops/check-services.sh

test: install install-ml install-system services
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow and not broker"

lint: install
	$(VENV)/bin/ruff check hpcq bridges tests bench
	$(VENV)/bin/ruff format --check hpcq bridges tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench-eval: install install-system
	$(PY) bench/bench_eval.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .grimp_cache .import_linter_cache

# ---- pipeline (issue 3: RabbitMQ producer/consumer, docs/pipeline.md) -----------------
.PHONY: run-consumer run-producer bench-pipeline
NAMESPACE ?= $(or $(HPCQ_NAMESPACE),hpcq)
CONSUMER_ARGS ?=

# One consumer for this node: slots from the allowed cores, drains on SIGTERM/SIGUSR1.
run-consumer: install install-system services
	$(PY) -m hpcq --log-level info consumer --namespace $(NAMESPACE) $(CONSUMER_ARGS)

bench-pipeline: install install-system services
	$(PY) bench/bench_pipeline.py
# ---- end pipeline ----------------------------------------------------------------------

# ---- SQD controller (docs/sqd.md) --------------------------------------------------------
.PHONY: run-sqd
SQD_ARGS ?=
run-sqd: install services
	$(PY) -m hpcq --log-level info sqd --namespace $(NAMESPACE) $(SQD_ARGS)

# ---- training (docs/training.md) ---------------------------------------------------------
.PHONY: demo run-producer bench-train
DEMO_STEPS ?= 40
PRODUCER_ARGS ?=

# The main job on one machine: builds the small model if missing, starts consumers (and
# the SQD controller with DEMO_SQD=1), runs GRPO for DEMO_STEPS, writes runs/<id>/report.md.
# DEMO_ASYNC=1: asynchronous rollouts (sample one step ahead while kernels are measured).
demo: install-ml install-system services
	DEMO_STEPS=$(DEMO_STEPS) $(PY) -m bridges.demo

# The GRPO producer against consumers already running (`make run-consumer`) on $(NAMESPACE).
run-producer: install-ml services
	$(PY) -m hpcq --log-level info producer --namespace $(NAMESPACE) \
	    --config ops/configs/bootstrap-small.toml \
	    --run-dir runs/producer-$$(date +%Y%m%d-%H%M%S) $(PRODUCER_ARGS)

# Sync vs async rollouts (K = 2, 4), step time, idle fraction, learning curves; BENCH_ARGS
# e.g. "--steps 20 --modes sync,async-k4".
BENCH_ARGS ?=
bench-train: install-ml install-system services
	$(PY) bench/bench_train.py $(BENCH_ARGS)
