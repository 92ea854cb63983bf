# The two quick-start commands are `make run` and `make test` (see README).
# Everything installs into .venv; nothing is installed system-wide except what
# the browser tests and the multi-instance tests need from Debian
# (scripts/install-browser.sh, scripts/install-proxy.sh).

SYSTEM_PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run install install-dev serve test bench soak bench-ledger

run: install serve

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

# Development server: SQLite, demo provider, first admin login and API key printed;
# daphne (config/devserver.py: its access log without query strings).
serve:
	DEBUG=$${DEBUG:-1} $(PYTHON) manage.py bootstrap
	DEBUG=$${DEBUG:-1} $(PYTHON) -m config.devserver -b $(HOST) -p $(PORT) -v 1 config.asgi:application

# The whole suite: lint (ruff), the layer contracts (import-linter), then pytest.
test: install-dev
	sh scripts/install-browser.sh
	sh scripts/install-proxy.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The benchmark (docs/PERFORMANCE.md); BENCH_ARGS=--quick for a shorter run.
bench: install-dev
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# The soak (docs/PERFORMANCE.md): a long mixed load, watched over time; SOAK_ARGS=--hours 24 for the long one.
soak: install-dev
	$(PYTHON) bench/soak.py $(SOAK_ARGS)

# The ledger at scale (docs/PERFORMANCE.md): 10M Usage rows seeded into its own
# PostgreSQL database (ep_bench_ledger, dropped after), pages and /costs timed
# before and after the rollups. BENCH_LEDGER_ARGS="--rows 1000000" for a shorter run.
bench-ledger: install-dev
	$(PYTHON) bench/ledger_scale.py $(BENCH_LEDGER_ARGS)
