"""FreezeNet on one screen: from a 32-bit seed to a saved .mfz, calling only the lessons.

    python examples/freezenet_minimal.py                      # LeNet-5-Caffe, q = 0.99, 1 epoch
    python examples/freezenet_minimal.py --rate 0.995 --epochs 3 --out fz.mfz

1. theta0: every weight drawn from one seed (init.py). The frozen weights are never stored:
   the seed regenerates them.
2. The score: one forward/backward pass on one batch, S = |theta0 * dL/dtheta| (SNIP's, and
   FreezeNet's).
3. Top-k: the (1 - q) share of the weights with the largest S stays trainable (m = 1).
4. Freeze: the others keep their random theta0 (pruning would set them to 0).
5. Train: forward, backward with the mask (a frozen weight's gradient is 0), and the masked SGD
   update that writes only entries with m = 1, so frozen weights equal theta0 bit for bit.
6. Save: the seed, the mask's indices and the trained values (storage.py).

No config, registry, trainer or threads: the pipeline (`minifreeze.train.train`) does the same
with all of those, and gives the same mask and the same parameters bit for bit
(tests/test_examples.py checks it, one shard, the `short` protocol's settings below).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from minifreeze import init, masks as M, storage
from minifreeze.data import load_dataset
from minifreeze.losses import softmax_cross_entropy
from minifreeze.models import get_model
from minifreeze.optim import make_schedule, masked_sgd_update

LR, MOMENTUM, WEIGHT_DECAY, BATCH, WARMUP = 0.05, 0.9, 5e-4, 100, 200  # the `short` protocol


def freezenet(data, *, seed: int = 0, rate: float = 0.99, epochs: int = 1, model_name="lenet5"):
    """FreezeNet trained on `data` (a `data.Dataset`) -> (model, masks, theta0, params)."""
    model = get_model(model_name)
    theta0 = init.init_params(model, seed, "xavier")           # 1. {name: float32 array}

    pick = np.random.default_rng([seed, 1]).choice(len(data.y_train), size=100, replace=False)
    _, g = model.loss_and_grads(theta0, data.x_train[pick], data.y_train[pick])
    weights = set(model.weight_names())
    scores = {k: np.abs(theta0[k] * g[k]) for k in theta0 if k in weights}   # 2. S = |theta g|

    masks = M.select_topk(scores, rate)                          # 3. m = 1 for the top (1 - q)
    params = M.apply_mode(theta0, masks, "freeze")               # 4. m = 0 keeps theta0

    n = len(data.y_train)
    steps = epochs * math.ceil(n / BATCH)
    lr_at = make_schedule("cosine", LR, steps, warmup=WARMUP)   # warm-up, then cosine decay
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    shuffle, t = np.random.default_rng([seed, 2]), 0
    for epoch in range(epochs):
        order = shuffle.permutation(n)                           # (n,)
        for start in range(0, n, BATCH):
            idx = order[start:start + BATCH]
            logits, caches = model.forward(params, data.x_train[idx])     # (B, 10)
            loss, dlogits = softmax_cross_entropy(logits, data.y_train[idx])
            grads = model.backward(dlogits, caches, masks=masks)  # 5. dL/dtheta, 0 where m = 0
            for k in params:                                     # theta -= lr v, where m = 1
                m = masks.get(k)
                masked_sgd_update(params[k], grads[k], velocity[k], m, lr_at(t), MOMENTUM,
                                  WEIGHT_DECAY, False, None if m is None else masks.index(k).flat)
            t += 1
        print(f"epoch {epoch + 1}: last batch loss {loss:.4f}")
    return model, masks, theta0, params


def accuracy(model, params, x, y, batch: int = 1000) -> float:
    """Share of x classified as y (forward passes only)."""
    hits = sum(int((model.forward(params, x[i:i + batch], train=False)[0].argmax(1)
                    == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return hits / len(y)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.99, help="q: the share of weights frozen")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", default="freezenet_minimal.mfz")
    args = p.parse_args(argv)
    data = load_dataset("mnist")                                 # verified, offline
    model, masks, theta0, params = freezenet(data, seed=args.seed, rate=args.rate,
                                             epochs=args.epochs)
    frozen = {k: params[k][masks[k] == 0] for k in masks}
    assert all(np.array_equal(frozen[k], theta0[k][masks[k] == 0]) for k in masks)
    ckpt = storage.Checkpoint(model.name, params, masks=dict(masks), seed=args.seed,
                              init_scheme="xavier", mode="freeze",
                              meta={"method": "freezenet", "rate": args.rate})
    size = storage.save(args.out, ckpt)                          # 6. seed + indices + values
    kept = sum(int(m.sum()) for m in masks.values())
    print(f"test accuracy {accuracy(model, params, data.x_test, data.y_test):.4f}; "
          f"{kept:,} of {sum(m.size for m in masks.values()):,} weights trained; "
          f"{args.out}: {size:,} bytes (dense float32: {4 * model.num_params():,})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
