# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv if missing and install what they need; torch is pinned to the CPU wheel
# through constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.slimkit-installed
# xdist workers each get one intra-op thread so two workers do not fight over 2 cores
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-slow bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/slimkit demo

test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

test-slow: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) -m slow tests

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
