# hybrid — set-up and the two everyday commands.
#   make demo   set up (if needed) and run the default thermal-block campaign under mpirun -n 2
#   make test   set up (if needed) and run all tests: serial pytest, then the MPI tests on 2 ranks
# The virtual environment lives in $(HYBRID_CACHE)/venv-<hash of the pins> and is linked as .venv;
# it is rebuilt only when the pins in pyproject.toml change.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
HYBRID_CACHE ?= $(HOME)/.cache/hybrid
VENV := .venv
PY := $(VENV)/bin/python
MPIRUN := $(VENV)/bin/mpirun
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: setup demo test test-serial test-mpi lint bench clean
.DEFAULT_GOAL := demo

setup:
	@HYBRID_CACHE="$(HYBRID_CACHE)" bash .ci/setup-venv

demo: setup
	$(MPIRUN) -n 2 $(VENV)/bin/hybrid campaign cases/thermal_block.toml --ranks-per-sample 1

test: setup
	$(MAKE) --no-print-directory test-serial test-mpi

test-serial:
	$(PY) -m pytest -q -m "not mpi" tests

test-mpi:
	$(MPIRUN) -n 2 $(PY) -m pytest -q -p no:cacheprovider --with-mpi -m mpi tests

lint: setup
	$(VENV)/bin/ruff check hybrid tests benchmarks

bench: setup
	$(PY) benchmarks/fem_campaign.py --out benchmarks/results/fem_campaign.json

clean:
	rm -rf runs .pytest_cache
