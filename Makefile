# Two entry points: `make demo` (set up + run the main job on the built-in SYNTHETIC cohort) and
# `make test` (set up + run the tests). Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medunlearn-installed

.PHONY: setup demo test test-all lint typecheck bench clean
# Static checks `make test` runs first (ruff and mypy, configured in pyproject.toml; both clean on main).
STATIC_CHECKS ?= lint typecheck

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build, so nothing pulls a multi-GB CUDA build (install your own GPU torch first to use one)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The hospital's side first, outside medunlearn: a SYNTHETIC archive and a DenseNet121 bundle trained on it by
# plain MONAI code (examples/deployed_bundle.py). medunlearn then adopts that bundle, unlearns, merges, reports,
# hands it back in its own form and runs the result under MONAI.
DEMO_SITE ?= demo_site
demo: $(STAMP)
	$(VENV)/bin/medunlearn cohort synth $(DEMO_SITE)/archive --patients 120 --seed 0 --overwrite
	$(PY) examples/deployed_bundle.py $(DEMO_SITE)/archive $(DEMO_SITE)/bundle
	$(VENV)/bin/medunlearn demo --bundle $(DEMO_SITE)/bundle --archive $(DEMO_SITE)/archive --out demo_out --overwrite

test: $(STAMP) $(STATIC_CHECKS)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test-all: $(STAMP)
	$(PY) -m pytest -m ""

clean:
	rm -rf demo_out demo_site bench_out .pytest_cache .mypy_cache .ruff_cache
