# minifreeze: `make test` and `make mnist` work from a fresh clone with Python 3.10+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lab test test-cuda-sim notebooks mnist study study-relu study-full collapse sanity length fashion paper conv-relu-table dead-units-table effective-table clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "minifreeze needs Python 3.10 or newer, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The course in JupyterLab: installs the `notebooks` extra (JupyterLab) into .venv once, with its
# own stamp, then opens notebooks/ with the environment's kernel. LAB_ARGS reaches jupyter lab,
# e.g. `make lab LAB_ARGS=--no-browser` on a machine without a browser.
LAB_STAMP := $(VENV)/.installed-lab
LAB_ARGS  ?=

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab notebooks/ $(LAB_ARGS)

$(LAB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,notebooks]'
	touch $(LAB_STAMP)

# pytest exits 5 when it collected no test: that fails `make test` too. One OpenBLAS thread unless
# set (the tests multiply small matrices; spinning BLAS threads on a busy machine cost 10x).
test: install
	OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} $(BIN)/python -m pytest -q

# The cuda tests on Numba's CUDA simulator (no GPU needed), in their own process: the simulator is
# chosen when Numba is first imported. MINIFREEZE_REQUIRE_CUDA=1 turns "cuda unavailable" into a
# failure instead of a skip, and `-m cuda` selecting nothing exits 5: both make this target red.
test-cuda-sim: install
	NUMBA_ENABLE_CUDASIM=1 MINIFREEZE_REQUIRE_CUDA=1 $(BIN)/python -m pytest -q -m cuda

# Execute every notebook in notebooks/ and notebooks/solutions/ (nbmake collects the folder
# recursively) in a fresh kernel from .venv; any failing cell fails the run. Fast mode
# (MINIFREEZE_FAST=1, small sizes) by default; `make notebooks FULL=1` for the real sizes.
# Figures use ipykernel's inline backend (no MPLBACKEND here), so a plotting cell that raises
# fails the run. The executed copies are thrown away, so the committed notebooks keep no outputs.
# One OpenBLAS thread unless set: on a shared 2-core machine its spinning threads made the fast run
# take 10.6 min instead of 48 s.
notebooks: install
	OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} MINIFREEZE_FAST=$(if $(FULL),0,1) $(BIN)/python -m pytest -q -p no:cacheprovider \
		--nbmake --nbmake-timeout=$(if $(FULL),1800,600) --durations=0 notebooks/

# LeNet-5-Caffe on the committed MNIST: dense, FreezeNet and SNIP at q = 0.995, the short protocol
# (20 epochs each, about 10 minutes for the three on 2 cores), two shards per batch: the numbers
# are the same, bit for bit, wherever the shard count is the same. MNIST_EPOCHS=N changes the
# epochs; MNIST_BUDGET=SECONDS instead fits the epochs to a time budget (then they depend on the
# machine). Writes runs/mnist/{dense,freezenet,snip}/ and the report (runs/mnist/summary.md,
# accuracy.png, ...), and prints the table.
MNIST_EPOCHS ?= 20
MNIST_BUDGET ?=
MNIST_RATE   ?= 0.995
MNIST_SEED   ?= 0
MNIST_SHARDS ?= 2
MNIST_EPOCH_ARGS = $(if $(MNIST_BUDGET),--epochs auto --budget $(MNIST_BUDGET),--epochs $(MNIST_EPOCHS))
MNIST_ARGS = --model lenet5 $(MNIST_EPOCH_ARGS) --seed $(MNIST_SEED) --shards $(MNIST_SHARDS)

mnist: install
	$(BIN)/python -m minifreeze train --method dense $(MNIST_ARGS) --out runs/mnist/dense
	$(BIN)/python -m minifreeze train --method freezenet --rate $(MNIST_RATE) $(MNIST_ARGS) --out runs/mnist/freezenet
	$(BIN)/python -m minifreeze train --method snip --rate $(MNIST_RATE) $(MNIST_ARGS) --out runs/mnist/snip
	$(BIN)/python -m minifreeze report runs/mnist

# The study: freezing against pruning across rates and seeds, one single-threaded run per core.
# LeNet-5-Caffe for STUDY_EPOCHS_LENET5 epochs and LeNet-300-100 for STUDY_EPOCHS_LENET300; dense,
# FreezeNet, SNIP and random masks frozen and pruned at four rates, three seeds, on both and on
# LeNet-5 with conv ReLU (reported apart as lenet5_relu); WeightMom and GMP
# at q = 0.99 and 0.995 and ELSA (levels 0.995 / 0.99 / 0.9 / dense; first phase SNIP's, then GMP's)
# on LeNet-5-Caffe; last the
# |g| mask frozen and pruned (FreezeNet's other reading), and SynFlow and GraSP frozen and
# pruned on both models (`make collapse` runs those alone, with FreezeNet and SNIP beside them).
# Resumable: run it again after a kill and
# only unfinished runs are redone. STUDY_ARGS reaches every sweep (e.g. --workers 4, or
# --executor dask --scheduler tcp://HOST:8786). Writes runs/study/ and its report.
STUDY_OUT    ?= runs/study
STUDY_SEEDS  ?= 0 1 2
STUDY_RATES  ?= 0.9 0.99 0.995 0.999
STUDY_EPOCHS_LENET5   ?= 8
STUDY_EPOCHS_LENET300 ?= 20
STUDY_METHODS ?= freezenet snip random_freeze random_prune
STUDY_GRAD    ?= grad_freeze grad_prune
STUDY_COLLAPSE ?= synflow_freeze synflow_prune grasp_freeze grasp_prune
STUDY_ARGS ?=
SWEEP = $(BIN)/python -m minifreeze sweep --seeds $(STUDY_SEEDS) --out $(STUDY_OUT) $(STUDY_ARGS)
LENET5   = --models lenet5 --epochs $(STUDY_EPOCHS_LENET5)
LENET300 = --models lenet300 --epochs $(STUDY_EPOCHS_LENET300)

study: install
	$(SWEEP) $(LENET5) --methods $(STUDY_METHODS) --rates $(STUDY_RATES)
	$(SWEEP) $(LENET300) --methods $(STUDY_METHODS) --rates $(STUDY_RATES)
	$(SWEEP) $(LENET5) --conv-relu --methods $(STUDY_METHODS) --rates $(STUDY_RATES)
	$(SWEEP) $(LENET5) --methods weightmom gmp --rates 0.99 0.995
	$(SWEEP) $(LENET5) --methods elsa --levels 0.995 0.99 0.9 --sparsifier snip
	$(SWEEP) $(LENET5) --methods elsa --levels 0.995 0.99 0.9 --sparsifier gmp
	$(SWEEP) $(LENET5) --methods $(STUDY_GRAD) --rates $(STUDY_RATES)
	$(SWEEP) $(LENET300) --methods $(STUDY_GRAD) --rates $(STUDY_RATES)
	$(SWEEP) $(LENET300) --methods $(STUDY_COLLAPSE) --rates $(STUDY_RATES)
	$(SWEEP) $(LENET5) --methods $(STUDY_COLLAPSE) --rates $(STUDY_RATES)
	$(BIN)/python -m minifreeze report $(STUDY_OUT)

# The LeNet-5 one-shot grid of `make study` alone, with a ReLU after each convolution (network
# lenet5_relu, the one the paper protocol trains), and SynFlow pruned beside it (the MNIST side of
# `make fashion`): 63 runs of about 3 minutes, seed by seed, resumable. Writes runs/study_relu/
# and its report; publish it with
# `python -m minifreeze publish runs/study_relu notebooks/results/study_relu`.
STUDY_RELU_OUT ?= runs/study_relu
study-relu: install
	$(BIN)/python -m minifreeze sweep --seeds $(STUDY_SEEDS) --out $(STUDY_RELU_OUT) --order seed $(STUDY_ARGS) $(LENET5) --conv-relu --methods $(STUDY_METHODS) synflow_prune --rates $(STUDY_RATES)
	$(BIN)/python -m minifreeze report $(STUDY_RELU_OUT)

# Is freezing about layer collapse? FreezeNet and SNIP against SynFlow (designed not to collapse a
# layer) and GraSP (designed to keep gradient flow), each frozen and pruned, with the study's
# hyperparameters: LeNet-300-100 (20 epochs) first, all rates, then LeNet-5-Caffe (8 epochs),
# the extreme rates first, seed by seed. About 75 runs of 30 s and 75 of 3 minutes on 2 cores
# (about 2 hours); resumable. Writes runs/collapse/ and its report; publish it with
# `python -m minifreeze publish runs/collapse notebooks/results/collapse`.
COLLAPSE_OUT ?= runs/collapse
COLLAPSE = $(BIN)/python -m minifreeze sweep --seeds $(STUDY_SEEDS) --out $(COLLAPSE_OUT) --order seed $(STUDY_ARGS) --methods freezenet snip $(STUDY_COLLAPSE)
collapse: install
	$(COLLAPSE) $(LENET300) --rates $(STUDY_RATES)
	$(COLLAPSE) $(LENET5) --rates 0.999 0.995
	$(COLLAPSE) $(LENET5) --rates 0.99 0.9
	$(BIN)/python -m minifreeze report $(COLLAPSE_OUT)

# The sanity checks of Frankle et al. for both fates: each mask as chosen, shuffled within each
# layer, trained from theta0 of seed + 1000 (frozen values too) and inverted (--variant), each
# frozen and pruned: SNIP's (FreezeNet / SNIP), SynFlow's, GraSP's and |theta0|'s masks on
# LeNet-300-100 (20 epochs) at q = 0.9, 0.99, 0.995, then FreezeNet and SNIP on LeNet-5-Caffe
# (8 epochs) at 0.99 and 0.995; seeds 0-2, seed by seed, the study's hyperparameters. The
# committed collapse runs count as finished (the "chosen" rows: same specs, same names).
# SynFlow has no inverted mask: its mask comes from 100 rounds of scoring a shrinking network, not
# from one score to turn upside down (`--variant inverted` refuses it), so the inverted row skips
# it. 216 new LeNet-300-100 runs (about 45 minutes two at a time on 2 cores, measured) and 36
# LeNet-5 runs of about 3 minutes (about an hour more); resumable.
# Writes runs/sanity/ and its report; publish with
# `python -m minifreeze publish runs/sanity notebooks/results/sanity`.
SANITY_OUT ?= runs/sanity
SANITY_VARIANTS ?= chosen shuffled redrawn inverted
SANITY_LENET300 ?= freezenet snip synflow_freeze synflow_prune grasp_freeze grasp_prune magnitude_freeze magnitude_prune
SANITY = $(BIN)/python -m minifreeze sweep --seeds $(STUDY_SEEDS) --out $(SANITY_OUT) --order seed $(STUDY_ARGS)
sanity: install
	mkdir -p $(SANITY_OUT) && cp -rn notebooks/results/collapse/*/ $(SANITY_OUT)/ 2>/dev/null || true  # the chosen masks' runs
	for v in $(SANITY_VARIANTS); do m="$(SANITY_LENET300)"; [ $$v = inverted ] && m="$(filter-out synflow_%,$(SANITY_LENET300))"; $(SANITY) $(LENET300) --methods $$m --rates 0.9 0.99 0.995 --variant $$v || exit 1; done
	for v in $(SANITY_VARIANTS); do $(SANITY) $(LENET5) --methods freezenet snip --rates 0.99 0.995 --variant $$v || exit 1; done
	$(BIN)/python -m minifreeze report $(SANITY_OUT)

# The gap against training length: FreezeNet and SNIP (dense beside them) at q = 0.9 and 0.995,
# seeds 0-2, the short protocol at budgets of 50, 200, 600, 1,200, 4,800 and 12,000 steps of 100
# images. A budget under one epoch trains one pass over the first 100 x steps training images;
# the warm-up is min(200, steps / 4). The collapse study's runs are two of the points (LeNet-5
# 4,800 steps, LeNet-300-100 12,000: copied in), so this target trains the other five budgets of
# each: 150 runs (dense too), the 12,000-step LeNet-5 ones last (about 4 minutes each); 70 minutes
# of run time by the committed runs' seconds, some 35 minutes two at a time on 2 cores. Resumable.
# Writes runs/length/ (its report: FreezeNet - SNIP per budget, length.png); publish it with
# `python -m minifreeze publish runs/length notebooks/results/length`.
LENGTH_OUT ?= runs/length
LENGTH = $(BIN)/python -m minifreeze sweep --methods freezenet snip --rates 0.9 0.995 --seeds $(STUDY_SEEDS) --out $(LENGTH_OUT) --order seed $(STUDY_ARGS)
LENGTH_SHORT = "--limit-train 5000 --epochs 1 --warmup-steps 12" "--limit-train 20000 --epochs 1 --warmup-steps 50" "--epochs 1 --warmup-steps 150" "--epochs 2"
length: install
	mkdir -p $(LENGTH_OUT) && for m in dense freezenet-q0.9- freezenet-q0.995- snip-q0.9- snip-q0.995-; do cp -rn notebooks/results/collapse/lenet*-$$m*/ $(LENGTH_OUT)/ 2>/dev/null; done; true  # its two committed budgets
	for b in $(LENGTH_SHORT) "--epochs 8"; do $(LENGTH) --models lenet300 $$b || exit 1; done
	for b in $(LENGTH_SHORT) "--epochs 20"; do $(LENGTH) --models lenet5 $$b || exit 1; done
	$(BIN)/python -m minifreeze report $(LENGTH_OUT)

# Beyond MNIST: Fashion-MNIST (28x28 grey images like MNIST, where a LeNet-5 reaches about 90% and
# differences between methods have room to show). LeNet-5 with conv ReLU (8 epochs, q = 0.9-0.999)
# and the small VGG (no batch norm, 1x28x28 input, 8 epochs, q = 0.9-0.995), each with the `short`
# protocol as in the study (lr 0.05 after a 200-step warm-up, cosine, momentum 0.9, weight decay
# 5e-4, batch 100, Glorot-normal init): dense, FreezeNet, SNIP, SynFlow pruned and a random mask
# frozen and pruned, seeds 0-2, the same hyperparameters for every method. LeNet-5: 63 runs of
# about 3 minutes; VGG: 48 runs, dense and frozen ones 25-59 minutes each on one core, pruned ones
# computing over their kept weights where a layer is under 5% dense (--sparse-compute, equal to
# float rounding; dense and frozen runs ignore it; at q = 0.99 and 0.995 4-35 minutes): the 48
# VGG runs took 88,581 s of training (8 times each run's median epoch), some 12 hours two at a
# time on the 2-core machines (docs/protocols.md says how it was measured). Resumable, seed by
# seed; a VGG run saves its training state after every epoch (--state-every 1: about 10 MB,
# against 3-6 minutes an epoch), so a stopped machine loses at most one epoch of each run in hand.
# Writes runs/fashion/ and its report; publish it with `python -m minifreeze publish runs/fashion
# notebooks/results/fashion`.
FASHION_OUT     ?= runs/fashion
FASHION_METHODS ?= freezenet snip synflow_prune random_freeze random_prune
FASHION = $(BIN)/python -m minifreeze sweep --dataset fashion-mnist --seeds $(STUDY_SEEDS) --out $(FASHION_OUT) --order seed $(STUDY_ARGS) --epochs 8 --methods dense $(FASHION_METHODS)
fashion: install
	mkdir -p $(FASHION_OUT) && cp -rn notebooks/results/fashion/*/ $(FASHION_OUT)/ 2>/dev/null || true  # the committed runs count as finished
	$(FASHION) --models lenet5 --conv-relu --rates 0.9 0.99 0.995 0.999
	$(FASHION) --models vgg --rates 0.9 0.99 0.995 --sparse-compute --state-every 1
	$(BIN)/python -m minifreeze report $(FASHION_OUT)

# The full grid of the study (two models, six methods and dense, seven rates, three seeds: 258
# runs, about 3 hours on 2 cores by make study's run times): for a bigger machine
# (STUDY_ARGS="--workers 16") or a Dask cluster (STUDY_ARGS="--executor dask --scheduler
# tcp://HOST:8786"). Resumable like `study`.
FULL_RATES ?= 0.9 0.95 0.98 0.99 0.995 0.998 0.999
study-full: install
	$(BIN)/python -m minifreeze sweep --models lenet5 lenet300 --methods freezenet snip grad_freeze grad_prune random_freeze random_prune --rates $(FULL_RATES) --seeds $(STUDY_SEEDS) --epochs $(STUDY_EPOCHS_LENET5) --out runs/study-full $(STUDY_ARGS)
	$(BIN)/python -m minifreeze report runs/study-full

# The paper's protocol (FreezeNet's supplement: lr 0.1 /10 every 25k steps, weight decay 5e-4,
# momentum 0.9, batch 100, 250 epochs, no warm-up; SNIP's code's initialiser, lecun; the test set
# also at the last 5 checkpoints, one every 1,000 steps, for SNIP's rule) on LeNet-5 with a ReLU
# after each convolution (`--conv-relu`): Caffe's LeNet-5, without it, cannot train dense at lr
# 0.1 (benchmarks/conv_relu_divergence.py). Dense, FreezeNet and SNIP at q = 0.995 for
# PAPER_SEEDS (0-4), both at q = 0.98 and 0.99 for PAPER_SEEDS_OTHER (0-2), and Caffe's network
# for seed 0 as the documented row where dense diverges. One single-threaded run per core: 60 to
# 120 minutes per run, 30 runs (Caffe's dense diverges in seconds), some 20 hours two at a time. Resumable twice over: finished runs
# are kept, and a run stopped half-way goes on from its last saved state (every 5 epochs).
# PAPER_ARGS="--init xavier" with PAPER_OUT=runs/paper gives the earlier, Glorot-normal rows
# (committed in notebooks/results/paper/).
PAPER_OUT         ?= runs/paper_lecun
PAPER_SEEDS       ?= 0 1 2 3 4
PAPER_SEEDS_OTHER ?= 0 1 2
PAPER_ARGS        ?=
PAPER = $(BIN)/python -m minifreeze sweep --protocol paper --models lenet5 --methods freezenet snip --out $(PAPER_OUT) $(PAPER_ARGS) $(STUDY_ARGS)
paper: install
	mkdir -p $(PAPER_OUT) && if [ -d notebooks/results/$(notdir $(PAPER_OUT)) ]; then cp -rn notebooks/results/$(notdir $(PAPER_OUT))/*/ $(PAPER_OUT)/ 2>/dev/null || true; fi  # the committed runs count as finished
	$(PAPER) --conv-relu --rates 0.995 --seeds $(PAPER_SEEDS) --order seed
	$(PAPER) --conv-relu --rates 0.98 0.99 --seeds $(PAPER_SEEDS_OTHER) --order seed
	$(PAPER) --rates 0.995 --seeds 0
	$(BIN)/python -m minifreeze report $(PAPER_OUT)

# Why the paper protocol runs LeNet-5 with conv ReLU: dense LeNet-5 at lr 0.1 with and without
# it, five initialisations, two seeds, 400 steps each (about 3 minutes). Writes
# notebooks/results/conv_relu/divergence.{json,md}.
conv-relu-table: install
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/conv_relu_divergence.py

# Why the paper protocol initialises with lecun: dead ReLU units in its first epoch (dense LeNet-5
# with conv ReLU, 600 steps), five initialisations, seeds 0-4 (about 10 minutes on a free core).
# Writes notebooks/results/dead_units/dead_units.{json,md}; docs/protocols.md embeds the table.
dead-units-table: install
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/dead_units_init.py

# Freezing against pruning at equal *effective* density (the weights some input-to-output path
# uses), counted from the collapse study's committed masks: seconds. Writes the record
# notebooks/results/effective/effective.json and effective.md.
effective-table: install
	$(BIN)/python benchmarks/effective_density.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs

# Throughput per backend (and against PyTorch when it is installed): `make bench BENCH_ARGS=--quick`.
.PHONY: bench
bench: install
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# The cuda backend on an NVIDIA GPU (after `pip install -e '.[cuda]'` into .venv; docs/gpu.md):
# the cuda tests on the device (MINIFREEZE_REQUIRE_CUDA=1: no GPU is a failure, not a skip), then
# benchmarks/gpu.py (images/s against this machine's CPU cores and PyTorch on the same GPU,
# agreement with the NumPy reference, determinism) into notebooks/results/gpu/, then make mnist's
# three runs trained on the GPU into GPU_OUT and their report. Not yet run on a GPU (docs/gpu.md).
GPU_OUT  ?= runs/gpu_mnist
GPU_ARGS ?=
GPU_MNIST_ARGS = --model lenet5 --epochs $(MNIST_EPOCHS) --seed $(MNIST_SEED)
.PHONY: gpu
gpu: install
	MINIFREEZE_REQUIRE_CUDA=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m cuda
	$(BIN)/python benchmarks/gpu.py $(GPU_ARGS)
	$(BIN)/python -m minifreeze --backend cuda train --method dense $(GPU_MNIST_ARGS) --out $(GPU_OUT)/dense
	$(BIN)/python -m minifreeze --backend cuda train --method freezenet --rate $(MNIST_RATE) $(GPU_MNIST_ARGS) --out $(GPU_OUT)/freezenet
	$(BIN)/python -m minifreeze --backend cuda train --method snip --rate $(MNIST_RATE) $(GPU_MNIST_ARGS) --out $(GPU_OUT)/snip
	$(BIN)/python -m minifreeze report $(GPU_OUT)

# The step times behind notebook 06's "my pruned model is not faster": LeNet-5-Caffe at q = 0.995,
# dense, FreezeNet, SNIP's pruned network on the sparse path and the same network on the dense
# path, numba, batch 100, the median of 7 interleaved rounds (about 2 minutes on 2 idle cores).
# Writes the record notebooks/results/paths/paths.json and its tables beside it.
.PHONY: paths
paths: install
	mkdir -p notebooks/results/paths
	$(BIN)/python benchmarks/bench.py --models lenet5 --backends numba --regimes dense freezenet snip snip_dense --no-torch --out notebooks/results/paths/paths.json

# The course to read without running it: every notebook and solution executed in full mode with
# papermill, the executed copies (figures, printed numbers, seconds, where it ran) written to
# docs/course/. About 30 minutes on 2 cores; `make course COURSE=05` renders only 05.
COURSE ?=
.PHONY: course
course: install
	$(BIN)/python notebooks/render.py $(COURSE)
