# hybrid — set-up and the two everyday commands.
#   make demo   set up (if needed), run the thermal-block campaign under mpirun -n 2, train a
#               surrogate on its store, query it, make synthetic data and infer the parameters
#               (FEM-confirmed MAP, then delayed-acceptance MCMC with chains on 2 ranks)
#   make demo-cardiac  the cardiac slab (issue 12): activation-time campaign (mpirun -n 2),
#               POD-NN ensemble with a conformal band, synthetic electrode data (1 ms), the
#               FEM-confirmed MAP, then surrogate -> coarse FEM -> fine FEM delayed acceptance
#   make test   set up (if needed) and run all tests: serial pytest, then the MPI tests on 2 ranks
#   make mutation [MODULES="parameters pod"]  mutation testing of the core modules with mutmut
#               (the `dev` extra, installed into the venv if missing; slow, not part of `test`);
#               summary in benchmarks/results/mutation.json
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

.PHONY: setup demo demo-cardiac test test-serial test-mpi lint bench mutation clean
.DEFAULT_GOAL := demo

setup:
	@HYBRID_CACHE="$(HYBRID_CACHE)" bash .ci/setup-venv

demo: setup
	$(MPIRUN) -n 2 $(VENV)/bin/hybrid campaign cases/thermal_block.toml --ranks-per-sample 1
	$(VENV)/bin/hybrid train runs/thermal_block/store --out runs/thermal_block/surrogate \
	    --epochs 200 --lbfgs 300 --force
	$(VENV)/bin/hybrid query runs/thermal_block/surrogate --mu 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9
	$(VENV)/bin/hybrid synth cases/thermal_block.toml --mu 0.2,0.35,0.5,0.65,0.8,0.3,0.45,0.6,0.75 \
	    --noise 0.01 --seed 1 --out runs/thermal_block/obs.csv --force
	$(VENV)/bin/hybrid infer cases/thermal_block.toml --surrogate runs/thermal_block/surrogate \
	    --data runs/thermal_block/obs.csv --method map --out runs/thermal_block/map --force
	$(MPIRUN) -n 2 $(VENV)/bin/hybrid infer cases/thermal_block.toml \
	    --surrogate runs/thermal_block/surrogate --data runs/thermal_block/obs.csv \
	    --method mcmc --chains 4 --samples 2000 --burn-in 500 --out runs/thermal_block/mcmc --force

demo-cardiac: setup
	$(MPIRUN) -n 2 $(VENV)/bin/hybrid campaign cases/cardiac_slab.toml --ranks-per-sample 1
	$(VENV)/bin/hybrid train runs/cardiac_slab/store --out runs/cardiac_slab/surrogate \
	    --members 4 --calibrate 0.1 --validation 0.25 --force
	$(VENV)/bin/hybrid query runs/cardiac_slab/surrogate --mu 0.15,0.04,0.13
	$(VENV)/bin/hybrid synth cases/cardiac_slab.toml --mu 0.15,0.04,0.13 --noise 1.0 \
	    --kind absolute --seed 1 --out runs/cardiac_slab/obs.csv --force
	$(VENV)/bin/hybrid infer cases/cardiac_slab.toml --surrogate runs/cardiac_slab/surrogate \
	    --data runs/cardiac_slab/obs.csv --method map --out runs/cardiac_slab/map --force
	$(MPIRUN) -n 2 $(VENV)/bin/hybrid infer cases/cardiac_slab.toml \
	    --surrogate runs/cardiac_slab/surrogate --data runs/cardiac_slab/obs.csv \
	    --method mcmc --stage2 fem --coarse cases/cardiac_slab_coarse.toml --kernel rw \
	    --subchain 50 --chains 4 --samples 1000 --burn-in 300 --no-enrich \
	    --out runs/cardiac_slab/mcmc --force

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
	$(PY) benchmarks/surrogate.py --fast-variant --ablation --out benchmarks/results/surrogate.json
	$(PY) benchmarks/inference.py --out benchmarks/results/inference.json

MUTMUT := mutmut==3.8.1
mutation: setup
	@$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -q "$(MUTMUT)"
	$(PY) benchmarks/mutation.py $(MODULES) --out benchmarks/results/mutation.json

clean:
	rm -rf runs .pytest_cache .mutation
