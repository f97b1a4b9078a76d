# Two entry points: `make demo` (set up + run the main job on the built-in SYNTHETIC cohort) and
# `make test` (set up + run the tests). Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medunlearn-installed

.PHONY: setup demo test test-all bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build, so nothing pulls a multi-GB CUDA build (install your own GPU torch first to use one)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medunlearn demo --out demo_out --overwrite

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

clean:
	rm -rf demo_out bench_out .pytest_cache
