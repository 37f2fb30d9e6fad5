# Yunnao: the main commands are `make run`, `make demo` and `make test`; the rest are helpers.
#   make run    create .venv if missing, install the pinned deps and the example
#               plugins, serve a node on embedded defaults (SQLite, MLflow and keys
#               under ./var, http://127.0.0.1:8000) with the examples published
#   make demo   install as make run does, then run a city and two districts linked by
#               the cascade (ports 8000-8002, state under ./var/demo); Ctrl-C stops them
#   make test   install the test deps and test servers (PostgreSQL from Debian when
#               absent), then lint and run the whole suite, real-server tests included
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
EXAMPLES := $(wildcard examples/*/pyproject.toml)

.PHONY: run demo test lint pytest deps test-deps test-servers bench clean help
.DEFAULT_GOAL := help

help:
	@sed -n '1,8p' Makefile | sed 's/^# \{0,1\}//'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run the install whenever the pins or the project metadata change.
$(VENV)/.deps: $(BIN)/python pyproject.toml constraints.txt $(EXAMPLES)
	$(PIP) -e . $(foreach e,$(EXAMPLES),-e $(dir $(e)))
	@touch $@

# nvidia-pytriton only for its real `tritonserver` binary: with its own deps it would
# downgrade numpy and protobuf, so it is installed without them (pinned in constraints).
$(VENV)/.test-deps: $(VENV)/.deps
	$(PIP) -e '.[test]'
	$(PIP) --no-deps nvidia-pytriton
	@touch $@

deps: $(VENV)/.deps
test-deps: $(VENV)/.test-deps

test-servers:
	@tests/realservers/install.sh

run: deps
	$(BIN)/yunnao serve --publish-plugins $(ARGS)

# A city and two districts linked by the cascade, state under ./var/demo (see
# docs/operating.md, "The city demo"); e.g. make demo ARGS='--port 9000 --fresh'
demo: deps
	$(BIN)/yunnao demo $(ARGS)

lint: test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

pytest: test-deps test-servers
	$(BIN)/pytest $(ARGS)

test: lint pytest

bench: test-deps test-servers
	@command -v wrk >/dev/null || tests/realservers/install.sh wrk
	$(BIN)/python bench/search.py
	$(BIN)/python bench/invoke.py
	$(BIN)/python bench/sandbox_attacks.py
	$(BIN)/python bench/cascade.py
	$(BIN)/python bench/judged.py
	$(BIN)/python bench/workers.py
	$(BIN)/python bench/federation.py
	$(BIN)/python bench/vision.py

clean:
	rm -rf var .pytest_cache .ruff_cache bench/results
