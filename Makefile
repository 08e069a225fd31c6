# The two commands README starts with: `make demo` and `make test`.
# Everything else here is what they are made of.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
## The demo and the tests use every extra: a PostgreSQL ledger, the offline agent,
## the benchmarks' baselines and the test tools
EXTRAS := dev,postgres,local,bench

.PHONY: setup system testdeps test lint demo clean

## Python environment, pinned by constraints.txt (re-runs only when they change)
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

## Debian packages and the LiveKit servers (built once, cached under .devstack/)
system: $(STAMP)
	$(PY) -m devstack install

## What only the tests need: PostgreSQL (ledger tests), LibreOffice (workbook check),
## Chromium and its WebDriver (the desk's browser tests)
testdeps:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || ! command -v libreoffice >/dev/null \
		|| ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing postgresql, libreoffice-calc, chromium and chromium-driver from Debian..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql \
			libreoffice-calc-nogui chromium chromium-driver >/dev/null; \
	fi

setup: $(STAMP) system

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## The whole test suite: lint, unit, integration (SQLite + PostgreSQL), e2e (real LiveKit stack)
test: setup testdeps lint
	$(PY) -m pytest

## The demo campaign, end to end, on the local LiveKit stack
demo: setup
	./scripts/demo.sh

clean:
	$(PY) -m devstack down || true
	rm -rf $(VENV) .devstack .pytest_cache .mypy_cache .ruff_cache
