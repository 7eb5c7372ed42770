# orders_app: every target creates .venv and installs the project when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help run test lint bench clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

run: $(STAMP) ## embedded broker + Postgres + CDC + worker + load generator; prints the URLs
	$(BIN)/orders-app run $(ARGS)

test: $(STAMP) ## the whole suite (unit, integration on the real broker and Postgres, e2e)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,dev,bench]'
	@touch $@

bench: $(VENV)/.bench-installed ## benchmark harness (BENCH_QUICK=1 for a short run); writes bench/results.json
	$(BIN)/python -m bench

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
