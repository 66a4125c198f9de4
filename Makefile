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

# the stamp installs the dependencies only (HARDNEG_COMPILE=0); the one compile is $(BUILT)'s, which
# make runs right after it: remaking the stamp makes $(BUILT) out of date, so a compile here too
# would compile every rule module twice on the first `make`
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	HARDNEG_COMPILE=0 $(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

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
	$(BIN)/python bench/bench_parsestore.py
	$(BIN)/python bench/bench_train.py

clean-venv:
	rm -rf $(VENV)
