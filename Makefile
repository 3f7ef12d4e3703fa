# `make demo` and `make test` each do all set-up on a fresh Debian machine
# (apt packages, .venv, pip install), idempotently, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever the package, its native core or the shipped models change.
SOURCES := pyproject.toml CMakeLists.txt $(shell find csrc kboost_rt models examples -type f \
	-not -path '*/__pycache__/*' -not -name '*.so' 2>/dev/null)

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES) tools/setup_system.sh
	tools/setup_system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet ".[torch,train,bench,eval,live,test]"
	touch $@

demo: setup
	$(BIN)/kboost-rt demo

test: setup
	$(BIN)/ruff check kboost_rt tests tools
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check kboost_rt tests tools
	$(BIN)/ruff format --check kboost_rt tests tools

clean:
	rm -rf $(VENV) build dist out
