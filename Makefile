# mikopbx.marketplace — developer and CI entry points.
#
#   make venv       .venv/ (Python 3.11, ansible-core 2.19, test tools, the emulator) + .collections link
#   make test       everything CI runs: lint, unit, integration, sanity (2.19 + 2.21), molecule, build
#   make demo       the role against an emulated fleet        make bench   fleet-size benchmarks
#   make help       all targets
#
# Every tool is called from the venvs by path; nothing relies on an activated environment.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# Interpreters: pyenv's shims only answer for the selected version, so prefer explicit paths.
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON311 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.11*/bin/python3.11) $(shell command -v python3.11))
PYTHON312 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12*/bin/python3.12) $(shell command -v python3.12))

VENV := .venv
VENV_221 := .venv-2.21
VBIN := $(CURDIR)/$(VENV)/bin
VBIN_221 := $(CURDIR)/$(VENV_221)/bin
STAMP := $(VENV)/.installed
STAMP_221 := $(VENV_221)/.installed
REQUIREMENTS_221 := tests/sanity/requirements-ansible-2.21.txt
REQUIREMENTS_TOOLS := tests/sanity/requirements-tools.txt
PIP_VERSION := 26.3
EMULATOR_PYPROJECT := $(wildcard tests/emulator/pyproject.toml)

COLLECTIONS := $(CURDIR)/.collections
COLLECTION_LINK := .collections/ansible_collections/mikopbx/marketplace
# ansible-test needs a real directory named ansible_collections/<namespace>/<name>.
SANITY_ROOT := build/ansible_collections/mikopbx/marketplace
SANITY_FINDINGS := build/sanity-findings.txt

export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONDONTWRITEBYTECODE := 1
# CI logs are files: no colour escapes from molecule (rich), pytest and ansible-lint.
ifdef CI
export NO_COLOR := 1
export PY_COLORS := 0
endif

# -n auto only when pytest-xdist is installed (it is pinned in requirements-dev.txt).
XDIST = $(shell $(VBIN)/python -c 'import xdist' >/dev/null 2>&1 && echo '-n auto')
# Test files that exist right now; a suite with none is reported as skipped, not passed.
UNIT_TESTS = $(wildcard tests/unit/test_*.py tests/unit/*/test_*.py tests/unit/*/*/test_*.py)
INTEGRATION_DIRS = $(sort $(dir $(wildcard tests/integration/test_*.py tests/integration/*/test_*.py \
	tests/emulator/tests/test_*.py tests/emulator/tests/*/test_*.py)))
LINT_ANSIBLE_PATHS = $(wildcard roles playbooks)
MOLECULE_SCENARIOS = $(wildcard molecule/*/molecule.yml)

# Runs pytest and turns "no tests collected" (exit 5) into a loud failure.
define pytest
	rc=0; $(VBIN)/pytest $(1) || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "FAIL: pytest collected no tests from: $(1)" >&2; exit 1; fi; \
	exit "$$rc"
endef

# pip install, without the machine-wide "Location ... is ignored" index warnings.
pip_install = $(1)/python -m pip install --quiet $(2) 2>&1 | { grep -v 'is neither a file nor a directory' || true; }

# A check that has nothing to test yet says why, and tells .ci/checks.sh it was skipped.
CHECKS_DIR := build/checks
skip = echo "SKIP $(1): $(2)"; mkdir -p $(CHECKS_DIR); echo "$(2)" > $(CHECKS_DIR)/$(1).skipped

say = @printf '\n\033[1m==> %s\033[0m\n' "$(1)"

.PHONY: help venv venv-221 lint ruff ansible-lint changelog-lint unit integration sanity sanity-219 \
	sanity-221 sanity-stage pip-standin molecule build test demo bench clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

# ---------------------------------------------------------------------------------------------
# Environments

venv: $(STAMP) $(COLLECTION_LINK) ## create .venv (Python 3.11, ansible-core 2.19) and .collections

$(STAMP): requirements.txt requirements-dev.txt $(REQUIREMENTS_TOOLS) $(EMULATOR_PYPROJECT)
	$(call say,venv: $(VENV) with $(PYTHON311))
	@test -n "$(PYTHON311)" || { echo "Python 3.11 not found; set PYTHON311=/path/to/python3.11" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON311) -m venv $(VENV)
	$(call pip_install,$(VBIN),pip==$(PIP_VERSION))
	$(call pip_install,$(VBIN),-r requirements-dev.txt -r $(REQUIREMENTS_TOOLS))
	$(if $(EMULATOR_PYPROJECT),$(call pip_install,$(VBIN),-e tests/emulator))
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

venv-221: $(STAMP_221) ## create .venv-2.21 (Python 3.12, ansible-core 2.21) for sanity

$(STAMP_221): $(REQUIREMENTS_221)
	$(call say,venv: $(VENV_221) with $(PYTHON312))
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found; set PYTHON312=/path/to/python3.12" >&2; exit 1; }
	test -x $(VENV_221)/bin/python || $(PYTHON312) -m venv $(VENV_221)
	$(call pip_install,$(VBIN_221),pip==$(PIP_VERSION))
	$(call pip_install,$(VBIN_221),-r $(REQUIREMENTS_221))
	touch $@

# ---------------------------------------------------------------------------------------------
# Checks

lint: ruff ansible-lint changelog-lint ## ruff, ansible-lint, antsibull-changelog lint

ruff: venv
	$(call say,ruff)
	$(VBIN)/ruff check --output-format concise .
	$(VBIN)/ruff format --check --output-format concise .

ansible-lint: venv
	$(call say,ansible-lint)
ifeq ($(strip $(LINT_ANSIBLE_PATHS)),)
	@$(call skip,ansible-lint,no roles/ or playbooks/ yet)
else
	$(VBIN)/ansible-lint $(if $(CI),--nocolor) $(LINT_ANSIBLE_PATHS)
endif

changelog-lint: venv
	$(call say,antsibull-changelog lint)
	$(VBIN)/antsibull-changelog lint

unit: venv ## unit tests (pytest tests/unit)
	$(call say,unit tests)
ifeq ($(strip $(UNIT_TESTS)),)
	@echo "FAIL: no unit test files under tests/unit" >&2; exit 1
else
	@$(call pytest,tests/unit)
endif

integration: venv ## integration + emulator tests against the emulator (xdist)
	$(call say,integration tests)
ifeq ($(strip $(INTEGRATION_DIRS)),)
	@$(call skip,integration,no test files yet under tests/integration or tests/emulator/tests)
else
	@$(call pytest,$(XDIST) --durations=10 $(INTEGRATION_DIRS))
endif

# ---------------------------------------------------------------------------------------------
# ansible-test sanity on a real copy of the tree, for the oldest and the newest supported core

pip-standin: venv venv-221
	.ci/install_pip_standin.sh $(VBIN)/python $(VBIN_221)/python

sanity-stage: venv
	$(call say,sanity: staging a copy at $(SANITY_ROOT))
	$(VBIN)/python .ci/stage_collection.py $(SANITY_ROOT)

sanity: ## ansible-test sanity with ansible-core 2.19/py3.11 and 2.21/py3.12
	@$(MAKE) --no-print-directory -k sanity-219 sanity-221

sanity-219: sanity-stage pip-standin
	$(call say,sanity: ansible-core 2.19 / Python 3.11)
	.ci/sanity.sh $(VBIN) 3.11 $(SANITY_ROOT) $(SANITY_FINDINGS)

sanity-221: sanity-stage pip-standin
	$(call say,sanity: ansible-core 2.21 / Python 3.12)
	.ci/sanity.sh $(VBIN_221) 3.12 $(SANITY_ROOT) $(SANITY_FINDINGS)

# ---------------------------------------------------------------------------------------------
# Molecule, packaging

molecule: venv ## molecule test --all (native scenarios, no containers)
	$(call say,molecule)
ifeq ($(strip $(MOLECULE_SCENARIOS)),)
	@$(call skip,molecule,no scenario under molecule/ yet)
else
	PATH=$(VBIN):$$PATH $(VBIN)/molecule test --all
endif

build: venv ## build the collection tarball into build/
	$(call say,build)
	mkdir -p build
	$(VBIN)/ansible-galaxy collection build --force --output-path build .

# ---------------------------------------------------------------------------------------------
# Aggregates and tools

# Every check runs even when an earlier one fails; the summary at the end lists them all and
# make exits non-zero if any failed. The two sanity runs go to the background, one after the
# other: they spend most of their time in single-process steps (pylint, validate-modules), which
# leaves the second core to the foreground checks. Their output is printed after the others.
CHECKS := ruff ansible-lint changelog-lint unit integration molecule build
BACKGROUND_CHECKS := sanity-219 sanity-221

test: ## everything CI runs
	@$(MAKE) --no-print-directory venv venv-221 $(COLLECTION_LINK) pip-standin
	@.ci/checks.sh "$(MAKE)" $(CHECKS_DIR) --background "$(BACKGROUND_CHECKS)" $(CHECKS)

demo: venv ## run the role against an emulated fleet (scripts/demo.sh)
	@test -f scripts/demo.sh || { echo "make demo: scripts/demo.sh does not exist yet" >&2; exit 1; }
	PATH=$(VBIN):$$PATH bash scripts/demo.sh

bench: venv ## benchmarks: the emulator (500 PBXs) and the fleet role vs a plain uri playbook
	PATH=$(VBIN):$$PATH $(VBIN)/python bench/bench_emulator.py
	PATH=$(VBIN):$$PATH $(VBIN)/python bench/run.py

clean: ## remove venvs, build output and caches
	rm -rf $(VENV) $(VENV_221) .collections build dist tests/output .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
