# The two commands of README.rst: `make run` and `make test`.  Both create
# .venv with the interpreter named by PYTHON if it does not exist yet.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-pythons lint typecheck check autobahn bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: setup.cfg setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: setup.cfg setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/python examples/broadcast/server.py

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# `make test-pythons`: the suite on the oldest and the newest Python the package
# claims (setup.cfg's classifiers), each in its own venv (.venv-3.10, ...).  An
# interpreter is looked up in pyenv's versions, then as pythonX.Y on PATH (a
# pyenv shim there fails for a version that is not selected: it must run).
TEST_PYTHONS ?= 3.10 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
test-pythons:
	@for version in $(TEST_PYTHONS); do \
	    python=$$(ls -d $(PYENV_ROOT)/versions/$$version.*/bin/python 2>/dev/null | sort -V | tail -1); \
	    [ -n "$$python" ] || python=$$(command -v python$$version); \
	    if [ -z "$$python" ] || ! "$$python" -c "" 2>/dev/null; then \
	        echo "no Python $$version ($(PYENV_ROOT)/versions/$$version.* or python$$version on PATH)"; exit 1; \
	    fi; \
	    echo "== Python $$version: $$python"; \
	    $(MAKE) --no-print-directory test PYTHON=$$python VENV=.venv-$$version PYTEST_ARGS="$(PYTEST_ARGS)" || exit 1; \
	done

lint: $(VENV)/.installed-test
	$(BIN)/ruff check geventws tests examples
	$(BIN)/ruff format --check geventws

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy geventws

check: lint typecheck test

clean:
	rm -rf $(VENV) .venv-3.* build *.egg-info .pytest_cache .mypy_cache .ruff_cache .node

# The Autobahn|Testsuite against examples/autobahn/server.py (all 517 cases, ~10-15 minutes).
AUTOBAHN ?= ../shared/tools/autobahn
AUTOBAHN_PORT ?= 9001
AUTOBAHN_CASES ?= *
autobahn: $(VENV)/.installed-run
	@$(BIN)/python examples/autobahn/server.py $(AUTOBAHN_PORT) & pid=$$!; \
	trap "kill $$pid 2>/dev/null" EXIT; \
	sleep 1; \
	$(AUTOBAHN)/run.sh -q -o autobahn-reports -a geventws ws://127.0.0.1:$(AUTOBAHN_PORT) "$(AUTOBAHN_CASES)"

# `make bench`: the benchmark matrix in its own venv (bench/.venv) with the peer
# servers and picows/uvloop; BENCH_QUICK=1 for the ~2 minute subset, BENCH_ARGS
# for bench/run.py's options (e.g. BENCH_ARGS="--scenarios echo --servers geventws").
BENCH_VENV ?= bench/.venv
BENCH_BIN := $(BENCH_VENV)/bin

$(BENCH_BIN)/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip

$(BENCH_VENV)/.installed: bench/requirements.txt setup.cfg setup.py | $(BENCH_BIN)/python
	$(BENCH_BIN)/python -m pip install --quiet -r bench/requirements.txt -e .
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python bench/run.py $(BENCH_ARGS)

# `make docs`: the Sphinx site in docs/_build/html, in its own venv (docs/.venv).
# -E reads every page afresh so every warning shows; -W -n: warnings, unresolved
# references included, fail the build.
DOCS_VENV ?= docs/.venv
DOCS_BIN := $(DOCS_VENV)/bin

$(DOCS_BIN)/python:
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_BIN)/python -m pip install --quiet --upgrade pip

$(DOCS_VENV)/.installed: docs/requirements.txt setup.cfg setup.py | $(DOCS_BIN)/python
	$(DOCS_BIN)/python -m pip install --quiet -r docs/requirements.txt -e '.[metrics,flask,gunicorn,redis]'
	touch $@

docs: $(DOCS_VENV)/.installed
	$(DOCS_BIN)/sphinx-build -E -q -W --keep-going -n -b html docs docs/_build/html
