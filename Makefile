# Two entry points (see README): `make tables` and `make test`. Both create or reuse
# the virtual environment in $(VENV) themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= smoke
CLUSTER ?= local
N ?= 1
STAMP := $(VENV)/.installed

.PHONY: venv data tables tables-recompute readings table report test slurm-up slurm-down

venv: $(STAMP)

# pip's "Location ... is ignored" lines are noise from this machine's local indexes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (first time: several minutes, torch is large)"
	@$(PY) -m pip install -q -e '.[test]' > $(VENV)/pip.log 2>&1 || { grep -v "is ignored" $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

# The embedded dataset is a pure function of its seed: made here if missing, and
# data.dvc pins exactly those bytes (`dvc repro`'s first stage re-verifies them).
data: $(STAMP)
	@$(PY) -m repro.data --profile smoke

DVC := PATH=$(abspath $(VENV))/bin:$$PATH DVC_NO_ANALYTICS=1 dvc

# Every table, Figure 6 and the results page at the embedded default through the DVC pipeline
# (dvc.yaml's `report` stage and everything it reads; the readings study is `make readings`). A result
# already in the job store (jobs/) is never recomputed: with a complete store this only
# re-renders tables/. When dvc.lock already matches the code, configs and data, DVC runs
# nothing: say so plainly rather than finish silently in a minute.
tables: data
	@if $(DVC) status -q --with-deps report >/dev/null 2>&1; then \
	  echo "tables/ is current: dvc.lock matches this checkout's code, configs and data, so nothing is recomputed."; \
	  echo "To recompute every table here from scratch (about three hours on 2 CPU cores): make tables-recompute"; \
	else \
	  echo "dvc repro: running the stages whose code, configs or data changed (all of them: about three hours on 2 CPU cores)"; \
	  $(DVC) repro report; \
	fi

# Recompute every table on this machine, whatever dvc.lock says (jobs/ still reuses finished jobs).
tables-recompute: data
	@$(DVC) repro --force report

# The readings study (benchmarks/readings.yaml): Table 1 and Table 2's ADM / MT-U / MT-X rows under
# every declared reading and seed; outside `make tables` because it takes hours on 2 CPU cores.
readings: data
	@$(DVC) repro readings

# One table at any profile, outside DVC: make table N=1 PROFILE=tiny
table: $(STAMP)
	$(PY) -m repro.table $(N) --profile $(PROFILE) --cluster $(CLUSTER)

# tables/report.pdf where pdflatex is installed (apt-get install texlive-latex-recommended)
report: tables
	@command -v pdflatex >/dev/null || { echo "pdflatex not found: install texlive-latex-recommended"; exit 1; }
	@cd tables && pdflatex -interaction=nonstopmode -halt-on-error report.tex >/dev/null && pdflatex -interaction=nonstopmode -halt-on-error report.tex >/dev/null && echo "tables/report.pdf"

# One pytest worker per core (pytest-xdist), each test module whole on one worker (--dist loadfile:
# a module's fixtures, e.g. a tiny table run, are set up once); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

slurm-up:
	bash scripts/slurm-local.sh up

slurm-down:
	bash scripts/slurm-local.sh down
