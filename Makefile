# Two commands for a fresh machine: `make demo` and `make test` (README).
# llama-cpp-python compiles llama.cpp from source (~5-10 min on 2 cores), always with llama.cpp's
# RPC backend (members on other machines, `edge-specens rpc-server`); CMAKE_ARGS you set for CUDA
# (-DGGML_CUDA=on) or Metal (-DGGML_METAL=on) are added to it. The venv is reused between runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export CMAKE_ARGS := -DGGML_RPC=on $(CMAKE_ARGS)
LLAMA_CPP_PYTHON := llama-cpp-python>=0.3.36,<0.4
# Intel AMX off on x86-64 unless EDGE_SPECENS_AMX=1: a native build turns on ggml's AMX kernels where
# the CPU reports AMX, and in virtual machines that report it without enabling the tile registers
# (seen here: a Firecracker VM on a Xeon) the first Q4_K matmul dies of SIGILL at `tileloadd`. AMX is a
# server-CPU feature; laptops, Pis and Macs lose nothing. GCC and clang honour an explicit -mno-*
# whatever -march=native says, in any order.
ifeq ($(shell uname -m),x86_64)
ifneq ($(EDGE_SPECENS_AMX),1)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CFLAGS := $(NO_AMX) $(CFLAGS)
export CXXFLAGS := $(NO_AMX) $(CXXFLAGS)
endif
endif

.PHONY: install install-dev sandbox-tool browser-tool lint test test-fast demo bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel setuptools

# Built here, not taken from pip's wheel cache: a cached wheel may lack RPC (or your GPU flags).
$(VENV)/.llama-rpc: | $(PY)
	$(PIP) install --no-cache-dir "$(LLAMA_CPP_PYTHON)"
	$(PY) -c "import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_rpc())" \
		|| { echo "llama-cpp-python was built without RPC; run: make clean install"; exit 1; }
	touch $@

$(VENV)/.installed: pyproject.toml | $(VENV)/.llama-rpc
	$(PIP) install -e ".[bench,server]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/.llama-rpc
	$(PIP) install -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev sandbox-tool browser-tool

# The eval's sandbox runs model-written code under bubblewrap: installed where we are root (CI's
# clean machine); elsewhere the sandbox tests skip and only its refusal path is tested.
sandbox-tool:
	@command -v bwrap >/dev/null 2>&1 || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && apt-get install -y bubblewrap; \
	else echo "bubblewrap (bwrap) is missing and cannot be installed here: the sandbox tests will be skipped"; fi

# The chat page's browser tests drive Debian's chromium through Playwright (never a browser download
# of Playwright's own): installed where we are root; elsewhere those tests skip with one line.
browser-tool:
	@command -v chromium >/dev/null 2>&1 || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && apt-get install -y chromium; \
	else echo "chromium is missing and cannot be installed here: the browser tests will be skipped"; fi

# ruff (lint + format check) and mypy (configured in pyproject.toml)
lint: install-dev
	$(VENV)/bin/ruff check edge_specens tests scripts
	$(VENV)/bin/ruff format --check edge_specens tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/mkdocs build --strict --quiet

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

# The documentation site (README links the same pages); --strict: a broken link or anchor fails.
docs: install-dev
	$(VENV)/bin/mkdocs build --strict --quiet
