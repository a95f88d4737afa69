# hactl developer entry points. `make test` is the README's test command and what CI runs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test unit integration venv deps demo demo-down bench clean completions man docs

test: deps
	$(PY) -m pytest -q tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: deps
	$(PY) -m pytest -q tests/integration

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

# System packages the integration tests need: etcd (Debian etcd-server) and PostgreSQL 15.
deps: $(STAMP)
	@bash scripts/install-deps.sh

demo: deps
	$(VENV)/bin/hactl demo up

demo-down:
	$(VENV)/bin/hactl demo down --purge

# Shell completions and man pages are generated from the CLI; tests/unit/test_docs_fresh.py fails when they are stale.
completions: $(STAMP)
	$(PY) scripts/gen_completions.py

man: $(STAMP)
	$(PY) scripts/gen_man.py

docs: completions man

bench: deps
	$(PY) bench/cli_latency.py

clean:
	rm -rf $(VENV) .pytest_cache
