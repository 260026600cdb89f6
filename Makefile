# Two commands for a fresh machine: `make demo` and `make test` (README).
# llama-cpp-python compiles llama.cpp from source (~5 min on 2 cores); pass CMAKE_ARGS for
# CUDA (-DGGML_CUDA=on) or Metal (-DGGML_METAL=on). The venv is reused between runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install install-dev lint test test-fast demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel setuptools

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e ".[bench,server]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# ruff (lint + format check) and mypy (configured in pyproject.toml)
lint: install-dev
	$(VENV)/bin/ruff check edge_specens tests scripts
	$(VENV)/bin/ruff format --check edge_specens tests scripts
	$(VENV)/bin/mypy

test: install-dev
	$(PY) -m pytest -q

test-fast: install-dev
	$(PY) -m pytest -q -m "not real and not slow"

demo: install
	$(VENV)/bin/edge-specens models pull qwen2.5-coder-duo
	$(PY) scripts/demo.py

bench: install
	$(VENV)/bin/edge-specens bench -p qwen2.5-coder-duo --out bench_out

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
