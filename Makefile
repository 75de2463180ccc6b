# Two commands on a fresh clone: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= disabled

.PHONY: install test quickstart quickstart-cgiaa benchmark gpu-check clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

quickstart: $(STAMP)
	bash scripts/quickstart.sh $(PY)

quickstart-cgiaa: $(STAMP)  # CG-IAA's pipeline on the toy set, CPU (docs/cgiaa.md)
	$(PY) -m mtpg_aiaa.engine.tasks.cgiaa.toy_quickstart --out outputs/quickstart-cgiaa --threads 1

benchmark: $(STAMP)
	$(PY) scripts/benchmark_inference.py

# CUDA tests and every GPU benchmark, one JSON (outputs/gpu_check/gpu_check.json); docs/performance.md
gpu-check: $(STAMP)
	PY=$(PY) bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) outputs multirun
