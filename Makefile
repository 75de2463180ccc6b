# Two commands on a fresh clone: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# --no-compile: no .pyc for the thousands of modules of torch & co. at install time (a fresh
# clone's install was 2-3 minutes); scripts/precompile.py then compiles the ~4,600 the commands
# import, once, so that no command compiles them again where PYTHONDONTWRITEBYTECODE is set.
PIP := $(PY) -m pip install --quiet --no-compile --disable-pip-version-check
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= disabled

.PHONY: install install-check test quickstart quickstart-aesnet quickstart-cgiaa benchmark gpu-check clean

# The runtime requirements (all the quickstart needs) ...
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	$(PY) scripts/precompile.py
	touch $(STAMP)

# ... and the test tools on top.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

# The package as a user installs it into an environment they already have: --no-deps beside
# the lock, then pip check that the lock satisfies pyproject.toml's ranges (and its own
# packages' requirements). Run by `make test`, hence by CI (.ci/run). Built with the lock's
# setuptools (torch requires it), so a second `make test` needs no network.
install-check: $(DEV_STAMP)
	$(PIP) --no-deps --no-build-isolation -e .
	$(PY) -m pip check

test: install-check
	$(PY) -m pytest -q

quickstart: $(STAMP)
	bash scripts/quickstart.sh $(PY)

quickstart-aesnet: $(STAMP)  # AesNet's toy claim on CPU (docs/aesnet.md)
	$(PY) -m mtpg_aiaa.experiments.aesnet.toy_claim --root data/toy_hand --out outputs/aesnet_toy

quickstart-cgiaa: $(STAMP)  # CG-IAA's pipeline on the toy set, CPU (docs/cgiaa.md)
	$(PY) -m mtpg_aiaa.experiments.cgiaa.toy_quickstart --out outputs/quickstart-cgiaa --threads 1

benchmark: $(STAMP)
	$(PY) scripts/benchmark_inference.py

# CUDA tests and every GPU benchmark, one JSON (outputs/gpu_check/gpu_check.json); docs/performance.md
gpu-check: $(STAMP)
	PY=$(PY) bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) outputs multirun
