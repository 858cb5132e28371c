# Two entry points (see README): `make tables` and `make test`. Both create or reuse
# the virtual environment in $(VENV) themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= smoke
CLUSTER ?= local
TABLES ?= 1
STAMP := $(VENV)/.installed

.PHONY: venv tables test test-fast slurm-up slurm-down clean-tables

venv: $(STAMP)

# pip's "Location ... is ignored" lines are noise from this machine's local indexes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (first time: several minutes, torch is large)"
	@$(PY) -m pip install -q -e '.[test]' > $(VENV)/pip.log 2>&1 || { grep -v "is ignored" $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

tables: $(STAMP)
	@for t in $(TABLES); do \
	  $(PY) -m repro.table $$t --profile $(PROFILE) --cluster $(CLUSTER) || exit $$?; \
	done

test: $(STAMP)
	$(PY) -m pytest -q

slurm-up:
	bash scripts/slurm-local.sh up

slurm-down:
	bash scripts/slurm-local.sh down
