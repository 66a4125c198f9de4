# The two commands of the README:  `make repro` (the main job) and `make test` (the test suite).
# Both create .venv and install hardneg with everything it needs on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hardneg-installed
# the install compiles stage 1's rule modules (pipeline/rules/, see setup.py and pipeline/_compiled.py);
# an edited rule module runs as plain Python until rebuilt, so rebuild (about 40 s) when one changed
BUILT  := $(VENV)/.hardneg-compiled
RULES  := $(shell find pipeline/rules -name '*.py') pipeline/_compiled.py setup.py
# a compile that was expected but failed is printed loudly (pip --quiet would hide setup.py's message)
CHECK_BUILD := $(BIN)/python -c "from pipeline import _compiled as c; f = c.build_failure(); \
	f and print('!' * 78 + '\nhardneg: the rule modules did not compile (' + f + '); running pure Python\n' + '!' * 78)"

.PHONY: setup test repro bench clean-venv

setup: $(BUILT)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	@$(CHECK_BUILD)
	touch $(STAMP) $(BUILT)

$(BUILT): $(STAMP) $(RULES)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(CHECK_BUILD)
	touch $(BUILT)

test: $(BUILT)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q tests

repro: $(BUILT)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

bench: $(BUILT)
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_train.py

clean-venv:
	rm -rf $(VENV)
