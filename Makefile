# The two Quick-start commands: `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install install-dev install-demo demo test lint format bench

install:
	$(PIP) install -q -e .

install-dev:
	$(PIP) install -q -e ".[dev]"

install-demo:
	$(PIP) install -q -e ".[demo]"

demo: install-demo
	pedattr demo --out runs/demo

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

test: install-dev lint
	$(PYTHON) -m pytest -q

bench:
	$(PYTHON) benchmarks/alm_head.py
