# orders_app: every target creates .venv and installs the project when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help run test lint bench clean browser vendor jre

# The dashboard's chart library (uPlot, MIT), vendored from the npm registry into
# web/static/vendor/ (gitignored): the page loads nothing from a CDN. Pinned version and
# tarball digest (the npm registry's `dist.integrity`).
UPLOT_VERSION ?= 1.6.32
UPLOT_SHA512  := KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==
VENDOR        := web/static/vendor
VENDORED      := $(VENDOR)/.uplot-$(UPLOT_VERSION)
# The browser the dashboard test drives (Debian's chromium, never `playwright install`).
CHROMIUM      ?= /usr/bin/chromium

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-7s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev,debezium]'
	@touch $(STAMP)

run: $(STAMP) $(VENDORED) ## embedded broker + Postgres + CDC + worker + load generator; prints the URLs
	$(BIN)/orders-app run $(ARGS)

test: $(STAMP) $(VENDORED) browser jre ## the whole suite (unit, integration on the real broker and Postgres, e2e)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENDORED):
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  echo "installing npm (apt-get) to vendor the dashboard's chart library" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null; } || \
	  { echo "make: npm is needed once to vendor uPlot $(UPLOT_VERSION) into $(VENDOR)/ (Debian: apt-get install npm)"; exit 1; }
	@mkdir -p $(VENDOR)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  npm pack --silent --pack-destination "$$tmp" uplot@$(UPLOT_VERSION) >/dev/null && \
	  tgz="$$tmp/uplot-$(UPLOT_VERSION).tgz" && \
	  got=$$($(PYTHON) -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1],"rb").read()).digest()).decode())' "$$tgz") && \
	  { [ "$$got" = "$(UPLOT_SHA512)" ] || { echo "make: uplot-$(UPLOT_VERSION).tgz digest mismatch: sha512-$$got"; exit 1; }; } && \
	  tar -xzf "$$tgz" -C "$$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE && \
	  cp "$$tmp/package/dist/uPlot.iife.min.js" "$$tmp/package/dist/uPlot.min.css" $(VENDOR)/ && \
	  cp "$$tmp/package/LICENSE" $(VENDOR)/uPlot.LICENSE
	@rm -f $(VENDOR)/.uplot-* && touch $@
	@echo "vendored uPlot $(UPLOT_VERSION) into $(VENDOR)/"

vendor: $(VENDORED) ## vendor the dashboard's chart library (uPlot, from npm) into web/static/vendor/

browser: ## install Debian's chromium for the dashboard's browser test when it is missing
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (apt-get) for the dashboard's browser test"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	    || echo "make: WARNING: apt-get could not install chromium; tests/e2e/test_dashboard_browser.py will fail"; \
	else \
	  echo "make: WARNING: $(CHROMIUM) is missing and this is not a root Debian shell;" \
	       "install it (sudo apt-get install chromium) or tests/e2e/test_dashboard_browser.py will fail"; \
	fi

jre: ## install a Java runtime (Debian openjdk-17-jre-headless) for real Debezium when none is found
	@if [ -n "$$JAVA_HOME" ] && [ -x "$$JAVA_HOME/bin/java" ] || command -v java >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing openjdk-17-jre-headless (apt-get) for real Debezium"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null; } \
	    || echo "make: WARNING: apt-get could not install a Java runtime; the CDC tests need one (or ORDERS_TEST_CDC=builtin)"; \
	else \
	  echo "make: WARNING: no Java runtime and this is not a root Debian shell;" \
	       "install one (sudo apt-get install openjdk-17-jre-headless) or run the tests with ORDERS_TEST_CDC=builtin"; \
	fi

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,dev,debezium,bench]'
	@touch $@

bench: $(VENV)/.bench-installed ## benchmark harness (BENCH_QUICK=1 for a short run); writes bench/results.json
	$(BIN)/python -m bench

clean: ## remove the virtualenv, the vendored chart library and local state
	rm -rf $(VENV) $(VENDOR) .data .pytest_cache .mypy_cache .ruff_cache
