# Two commands on a fresh machine: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= auto

.PHONY: venv install run test test-slow test-all data lab download bench clean-data help

help:
	@echo "make run       the main job: data (synthetic when no real data), every notebook, a submission"
	@echo "make test      the test suite without the heavy checks (CPU, about 2.5 minutes)"
	@echo "make test-slow the heavy checks: every notebook end to end, overfitting, torchrun (CPU, minutes)"
	@echo "make test-all  both"
	@echo "make data      render the synthetic default dataset and build competition files from it"
	@echo "make lab       JupyterLab on this repo with its environment"
	@echo "make download  the real competition files with the kaggle CLI (needs credentials)"
	@echo "make bench     speed benchmarks into BENCHMARKS.md"

venv: $(STAMP)
install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -r requirements.txt
	echo "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/handjoints-repo.pth"
	$(VENV)/bin/nbstripout --install 2>/dev/null || true
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: $(STAMP)
	$(PY) -m pytest

run: $(STAMP)
	$(PY) -m lib.pipeline --profile $(PROFILE)

data: $(STAMP)
	$(PY) -m lib.pipeline --only data --profile $(PROFILE)

# JupyterLab refuses to start as root (the usual user in a container) without --allow-root
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root)

download: $(STAMP)
	$(PY) -m lib.submit download --out data

bench: $(STAMP)
	$(PY) -m benchmarks all --out BENCHMARKS.md

clean-data:
	rm -rf data/synthetic data/synthetic-smoke data/synthetic-full data/cache
