# minifreeze: `make test` and `make mnist` work from a fresh clone with Python 3.10+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-cuda-sim notebooks mnist clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "minifreeze needs Python 3.10 or newer, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# pytest exits 5 when it collected no test: that fails `make test` too. One OpenBLAS thread unless
# set (the tests multiply small matrices; spinning BLAS threads on a busy machine cost 10x).
test: install
	OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} $(BIN)/python -m pytest -q

# The cuda tests on Numba's CUDA simulator (no GPU needed), in their own process: the simulator is
# chosen when Numba is first imported. MINIFREEZE_REQUIRE_CUDA=1 turns "cuda unavailable" into a
# failure instead of a skip, and `-m cuda` selecting nothing exits 5: both make this target red.
test-cuda-sim: install
	NUMBA_ENABLE_CUDASIM=1 MINIFREEZE_REQUIRE_CUDA=1 $(BIN)/python -m pytest -q -m cuda

# Execute every notebook in notebooks/ in a fresh kernel from .venv; any failing cell fails the run.
# Fast mode (MINIFREEZE_FAST=1, small sizes) by default; `make notebooks FULL=1` for the real sizes.
# The executed copies are thrown away, so the committed notebooks keep no outputs.
# One OpenBLAS thread unless set: on a shared 2-core machine its spinning threads made the fast run
# take 10.6 min instead of 48 s.
notebooks: install
	OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} MINIFREEZE_FAST=$(if $(FULL),0,1) MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider \
		--nbmake --nbmake-timeout=600 notebooks/

# LeNet-5-Caffe on the committed MNIST: dense, FreezeNet and SNIP at q = 0.995, each given
# MNIST_BUDGET seconds; `train --epochs auto` times a few steps and fits the epochs to the budget.
# Pass MNIST_EPOCHS=N to fix the epochs instead. Writes runs/mnist/{dense,freezenet,snip}/,
# runs/mnist/results.json and runs/mnist/accuracy.png, and prints the table.
MNIST_BUDGET ?= 180
MNIST_EPOCHS ?= auto
MNIST_RATE   ?= 0.995
MNIST_SEED   ?= 0
MNIST_EPOCH_ARGS = --epochs $(MNIST_EPOCHS) $(if $(filter auto,$(MNIST_EPOCHS)),--budget $(MNIST_BUDGET))

mnist: install
	$(BIN)/python -m minifreeze train --model lenet5 --method dense $(MNIST_EPOCH_ARGS) --seed $(MNIST_SEED) --out runs/mnist/dense
	$(BIN)/python -m minifreeze train --model lenet5 --method freezenet --rate $(MNIST_RATE) $(MNIST_EPOCH_ARGS) --seed $(MNIST_SEED) --out runs/mnist/freezenet
	$(BIN)/python -m minifreeze train --model lenet5 --method snip --rate $(MNIST_RATE) $(MNIST_EPOCH_ARGS) --seed $(MNIST_SEED) --out runs/mnist/snip
	$(BIN)/python -m minifreeze report runs/mnist

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs

# Throughput per backend (and against PyTorch when it is installed): `make bench BENCH_ARGS=--quick`.
.PHONY: bench
bench: install
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
