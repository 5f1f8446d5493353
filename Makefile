# The two commands a newcomer runs: `make demo` and `make test`. Both set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
PG_GLOB := /usr/lib/postgresql/*/bin/initdb

.PHONY: demo test lint bench soak openapi servers venv clean help release
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

venv: $(STAMP)  ## create .venv and install failsoft with its test extras

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "failsoft needs Python >= 3.11 (found $$($(PYTHON) --version 2>&1))"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "cannot create a virtual environment: install python3-venv (sudo apt-get install -y python3-venv)"; exit 1; fi; }
	$(PY) -m pip install -q -e '.[test,uvloop]'
	@touch $@

# PostgreSQL and Redis for the demo and the tests: the local binaries, installed with apt when missing
# (as root), unless a Docker engine answers (then testcontainers starts them in containers).
servers:  ## make sure PostgreSQL and Redis server binaries (or a Docker engine) are available
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "servers: a Docker engine answers; tests use testcontainers"; exit 0; fi; \
	missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls $(PG_GLOB) >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "servers: installing$$missing with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  if [[ "$$missing" == *postgresql* ]]; then service postgresql stop >/dev/null 2>&1 || true; fi; \
	else \
	  echo "servers: missing$$missing. Install them (sudo apt-get install -y$$missing) or start a Docker engine."; \
	  exit 1; \
	fi

demo: $(STAMP) servers  ## run failsoft against throw-away local PostgreSQL and Redis (Ctrl-C stops it all)
	$(VENV)/bin/failsoft demo

test: $(STAMP) servers  ## run the whole test suite against real servers
	@.ci/ensure-tools .ci/test-tools.txt
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff and mypy --strict
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ruff check failsoft daemon probes policies tests
	$(PY) -m mypy

# What a deployment installs (`pip install 'failsoft[daemon]'`, no test tools): the idle bench measures its memory
# too, since test-only packages (rich, which structlog imports when present) add ~3 MiB to the test venv's daemon.
PROD_VENV := .bench/venv-daemon
$(PROD_VENV)/.installed: pyproject.toml
	@test -x $(PROD_VENV)/bin/python || $(PYTHON) -m venv $(PROD_VENV)
	$(PROD_VENV)/bin/python -m pip install -q -e '.[daemon]'
	@touch $@

bench: $(STAMP) servers $(PROD_VENV)/.installed  ## measure probe, publish and HTTP costs; prints a table
	@.ci/ensure-tools .ci/bench-tools.txt
	BENCH_DAEMON_PYTHON=$(PROD_VENV)/bin/python $(PY) tests/bench/run.py

release: $(STAMP)  ## sdist, wheel, CycloneDX SBOM and SHA256SUMS in dist/, version from the git tag (docs/releases.md)
	$(PY) -m pip install -q -e '.[dev]'
	VENV=$(VENV) .ci/release

soak: $(STAMP) servers  ## the daemon against flapping faults for SOAK_MINUTES (default 30); fails when a resource grows
	SOAK_MINUTES=$${SOAK_MINUTES:-30} SOAK_DIR=$${SOAK_DIR:-build/soak} FLAP_SECONDS=60 $(PY) -m pytest -p no:cacheprovider \
	  -q -s tests/soak tests/e2e/test_faults.py::test_random_failures_never_flap_faster_than_recover_after $(PYTEST_ARGS)

openapi: $(STAMP)  ## regenerate docs/openapi.json from the fragments in daemon/openapi/
	$(PY) -m failsoft.daemon.openapi > docs/openapi.json

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

.PHONY: screenshots
screenshots: $(STAMP) servers  ## remake docs/status-page*.png: the status page's browser test takes them
	@.ci/ensure-tools .ci/test-tools.txt
	FAILSOFT_SCREENSHOTS=1 $(PY) -m pytest -p no:cacheprovider -q tests/e2e/test_page.py -k demo
