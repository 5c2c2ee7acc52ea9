"""minifreeze: FreezeNet, SNIP, WeightMom and ELSA: pruning and freezing, written out in NumPy.

Modules, one concept each:
    im2col     im2col / col2im and max-pool windows, the NumPy reference kernels
    kernels_sparse  the kernels a mask allows (sampled dW, pruned products), in NumPy
    winograd   Winograd's F(2x2, 3x3) for 3x3 stride-1 convolutions, forward and both gradients
    backend    which kernels run (numpy, numba, cuda) and the switch between them
    layers     functional forward/backward pairs: linear, relu, conv, maxpool, flatten, batchnorm
    losses     numerically stable softmax cross-entropy
    models     LeNet-300-100, LeNet-5-Caffe and a small VGG as layer specs over a params dict
    gradcheck  finite-difference and complex-step gradients, relative error
    init       seed-based initialisation: theta0 regenerated bit for bit from one 32-bit seed
    saliency   scores from one batch: snip (SNIP, FreezeNet), grad, magnitude, random
    masks      the vocabulary (m, density, rate q, compression), top-k masks, freeze or prune
    optim      masked SGD: only m == 1 entries move; cosine and step schedules
    storage    the .mfz file: masks, trained values, seed; atomic writes, checksums
    data       verified MNIST / Fashion-MNIST / CIFAR-10 loading, validation split
    methods    the registry: every method and one-shot score, each owning its options and checks
    train      the pipeline: TrainConfig and its protocols, prepare, train_steps, train
    synflow    SynFlow's data-free iterated score (a one-shot score: synflow_freeze, synflow_prune)
    grasp      GraSP's gradient-flow score (a one-shot score: grasp_freeze, grasp_prune)
    weightmom  pruning during training: WeightMom (our reading) and gradual magnitude pruning
    elsa       ELSA (our reading): nested sparse levels trained in phases, extracted by zeroing
    parallel   a batch cut into shards on threads (data parallelism on the CPU)
    kernels_numba  the reference kernels as compiled Numba loops (the default backend)
    kernels_cuda  optional numba.cuda kernels (imported only by the cuda backend)
    cuda_train    DeviceTrainer: a whole training run kept on the GPU

The lab (`minifreeze/lab/`: runs, sweeps, the command line, the report) is the apparatus around
these lessons; they never import it.

The pipeline in one call: `minifreeze.train.train(TrainConfig(...), load_dataset("mnist"))`.
"""

__version__ = "0.1.0"

# Every module that registers a method (methods.py holds the registry and the one-shot saliency
# methods): imported here, so the registry is whole whichever module a program imports first.
from minifreeze import weightmom, elsa, synflow, grasp  # noqa: E402,F401  (order: tables' order)
from minifreeze import methods as _methods  # noqa: E402

# |theta0| frozen and pruned (the sanity checks' magnitude baseline), registered last so that the
# tables' order and the figures' colours of the methods above stay as they were.
_methods.register_score_methods("magnitude")
