"""minifreeze: FreezeNet and SNIP, pruning and freezing at initialisation, written out in NumPy.

Modules, one concept each:
    im2col     im2col / col2im and max-pool windows, the NumPy reference kernels
    backend    which kernels run (numpy, numba, cuda) and the switch between them
    layers     functional forward/backward pairs: linear, relu, conv, maxpool, flatten, batchnorm
    losses     numerically stable softmax cross-entropy
    models     LeNet-300-100, LeNet-5-Caffe and a small VGG as layer specs over a params dict
    gradcheck  finite-difference and complex-step gradients, relative error
    kernels_cuda  optional numba.cuda kernels (imported only by the cuda backend)
    cuda_train    DeviceTrainer: a whole training run kept on the GPU
"""

__version__ = "0.1.0"
