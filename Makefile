# Two entry points, each sets up its own virtual environment first:
#   make build   -> python -m gen build --board ulx3s (the built-in default design)
#   make test    -> the whole test suite (pytest: tests/ and the cocotb benches in verif/)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: build test bench setup clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

build: $(VENV)/.installed
	$(PY) -m gen build --board ulx3s

test: $(VENV)/.installed
	$(PY) -m pytest -n auto --dist loadfile

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_foundation.py
	$(PY) benchmarks/bench_cost.py
	$(PY) benchmarks/bench_alloc.py

clean:
	rm -rf rtl_out/* sim_build
