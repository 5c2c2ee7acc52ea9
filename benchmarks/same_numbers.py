"""Same numbers before and after a change: a small grid's trained parameters, digested.

Trains a small grid (LeNet-300-100 and LeNet-5 on the first 2,000 committed MNIST images, one
epoch, every one-shot method plus dense, WeightMom and GMP; then ELSA with three sparsifiers) through the library and prints one
SHA-256 per run over its final parameters and masks (the bytes, in the model's order). Run it on
two checkouts of the same machine and compare the lines: a refactor that claims to change no
number must print the same digests.

    python benchmarks/same_numbers.py > after.txt
    PYTHONPATH=/path/to/old/checkout python benchmarks/same_numbers.py > before.txt
    diff before.txt after.txt

Only public names that have existed since the first trainer (`train.TrainConfig`, `train.train`,
`data.load_dataset`, `data.limit_train`, `data.limit_test`) are used, so an older checkout runs it;
the configs are written flat, as TrainConfig's fields were before each method's options were
nested (`TrainConfig.from_dict` reads that form where it exists).
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from minifreeze.data import limit_test, limit_train, load_dataset
from minifreeze.train import TrainConfig, train

GRID = [(model, method, rate, sparse)
        for model in ("lenet300", "lenet5")
        for method, rate, sparse in (("dense", 0.0, False), ("freezenet", 0.99, False),
                                     ("snip", 0.99, False), ("snip", 0.995, True),
                                     ("grad_freeze", 0.99, False), ("random_prune", 0.99, False),
                                     ("weightmom", 0.9, False), ("gmp", 0.9, False))]
"""(model, method, rate, sparse_compute): the last turns on a pruned layer's sparse products."""


def digest(result) -> str:
    h = hashlib.sha256()
    for name, value in result.params.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    for name, m in (result.masks or {}).items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(m).tobytes())
    return h.hexdigest()


def config(**fields) -> TrainConfig:
    """A config from flat fields, on checkouts before and after options were nested."""
    return TrainConfig.from_dict(fields) if hasattr(TrainConfig, "from_dict") else TrainConfig(**fields)


def main() -> int:
    data = limit_test(limit_train(load_dataset("mnist"), 2000), 500)
    for model, method, rate, sparse in GRID:
        c = config(model=model, method=method, rate=rate, epochs=1, batch_size=100,
                   warmup_steps=5, lr=0.05, seed=3, shards=2, prune_every=4,
                   sparse_compute=sparse)
        r = train(c, data, progress=False)
        print(f"{model} {method} {rate} sparse={sparse} {r.history[-1]['test_accuracy']:.4f} "
              f"{digest(r)}", flush=True)
    from minifreeze import elsa  # ELSA's phases (elsa.train has existed since ELSA did)
    for sparsifier in ("snip", "grad", "gmp"):
        c = config(model="lenet300", method="elsa", levels=(0.99, 0.9), epochs=1,
                   batch_size=100, warmup_steps=5, lr=0.05, seed=3, shards=2,
                   prune_every=4, sparsifier=sparsifier)
        r = elsa.train(c, data, progress=False)
        print(f"lenet300 elsa {sparsifier} {r.history[-1]['test_accuracy']:.4f} "
              f"{digest(r)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
