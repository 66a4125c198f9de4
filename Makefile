# The two commands of the README:  `make repro` (the main job) and `make test` (the test suite).
# Both create .venv and install hardneg with everything it needs on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hardneg-installed
# the install compiles stage 1's rule modules (setup.py, pipeline/_compiled.py); an edited source
# runs as plain Python until rebuilt, so rebuild (about 40 s) whenever a stage-1 source changed
BUILT  := $(VENV)/.hardneg-compiled

.PHONY: setup test repro bench clean-venv

setup: $(BUILT)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP) $(BUILT)

$(BUILT): $(STAMP) $(wildcard pipeline/*.py pipeline/families/*.py)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(BUILT)

test: $(BUILT)
	$(BIN)/python -m pytest -q tests

repro: $(BUILT)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

bench: $(BUILT)
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_train.py

clean-venv:
	rm -rf $(VENV)
