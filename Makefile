# Two commands do all the set-up on a fresh machine:
#   make run    builds the embedded demo and serves the dashboard
#   make test   runs the whole test suite
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
export SPARK_LOCAL_IP ?= 127.0.0.1
export OMP_NUM_THREADS ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: run test lint bench system-packages space clean

system-packages:
	@command -v java >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q openjdk-17-jre-headless; }

$(RUNTIME_STAMP): requirements.txt constraints.txt pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip==25.3
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt -c constraints.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt requirements-bench.txt
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }
	@test -x /usr/lib/postgresql/15/bin/initdb || { apt-get update -q && apt-get install -y -q postgresql; }
	$(PIP) install -q -r requirements-dev.txt -c constraints.txt
	touch $@

# The CMS HRRP files are public domain; the demo loads them when the shared data folder is present.
CMS_INPUT ?= $(wildcard ../shared/data/cms_hrrp)

run: $(RUNTIME_STAMP)
	$(VENV)/bin/readmit demo $(if $(CMS_INPUT),--cms-input $(CMS_INPUT))

# Lint first: ruff (pyflakes, pycodestyle errors, isort, bugbear, imports at top) and the layer contracts.
lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/python -m pytest

# Benchmarks (LightGBM is installed for the benchmark only).
bench: $(DEV_STAMP)
	$(PIP) install -q -r requirements-bench.txt -c constraints.txt
	$(PY) benchmarks/model_quality.py
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/etl.py --rows 100000
	$(PY) benchmarks/api_load.py

# Schemathesis for 150 s (randomised, with the stateful phase) against a real `readmit api`; `make test`
# runs a bounded deterministic pass of the same checks (tests/test_api_integration.py).
.PHONY: fuzz
fuzz: $(DEV_STAMP)
	$(PY) benchmarks/fuzz_api.py --seconds 150

# Assemble the Hugging Face Space folder (.space/): app, shipped model, synthetic demo warehouse.
space: $(RUNTIME_STAMP)
	rm -rf .space .space-warehouse .space-operational.sqlite3
	READMIT_DATABASE_URL=sqlite:///$(CURDIR)/.space-operational.sqlite3 \
	  $(VENV)/bin/readmit demo --no-serve --rebuild --warehouse .space-warehouse $(if $(CMS_INPUT),--cms-input $(CMS_INPUT))
	$(PY) scripts/build_space.py --out .space --model models/champion --warehouse .space-warehouse \
	  --database .space-operational.sqlite3

clean:
	rm -rf $(VENV) data/warehouse
