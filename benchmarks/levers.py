"""Where a dense training step goes, op by op, and what the levers left for speed could win.

    python benchmarks/levers.py --out notebooks/results/bench/levers.json

The two dense targets of `bench.py` (LeNet-5 >= 1.6x PyTorch, VGG >= 1.0x) are missed with
im2col, and Winograd is slower here. Two more levers were named: fusing ReLU and max-pooling
into the convolution's output pass, and a direct kernel for LeNet-5's single-channel conv1 (its
im2col product has K = 25). Before building either, this measures what each could win at most:

- a dense step on one shard (batch 50, one BLAS thread: the op times add up to the step), with
  every op of `layers.py` the model calls timed by a wrapper, summed over `--steps` steps; an
  op's share of the step bounds the gain of any change to it (fusing ReLU and pooling into the
  convolution removes at most their whole time);
- conv1's weight gradient dW = d2 (F, N*OH*OW) @ cols.T, the product BLAS does worst here (a
  tiny (20, 25) result over a long K), against the same product summed in `--chunk`-column
  blocks (what a direct kernel would do), with the largest difference between the two: the
  blocked sum is faster but rounds differently, so it would change every committed result.

The time of each op is the median over `--rounds` rounds of its per-step mean; the machine
should be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minifreeze import backend, init, layers, parallel, storage  # noqa: E402
from minifreeze.lab.environment import environment  # noqa: E402
from minifreeze.models import get_model  # noqa: E402
from benchmarks.bench import MinifreezeRunner  # noqa: E402

OPS = ("conv_forward", "conv_backward", "linear_forward", "linear_backward", "relu_forward",
       "relu_backward", "maxpool_forward", "maxpool_backward")


class OpTimer:
    """Wraps the ops of `layers.py` while active; `totals[(op, layer)]` sums their seconds.
    Convolutions are told apart by layer name, other ops by op alone."""

    def __init__(self):
        self.totals = defaultdict(float)
        self.saved = {}

    def __enter__(self):
        for op in OPS:
            fn = self.saved[op] = getattr(layers, op)
            setattr(layers, op, self._wrap(op, fn))
        return self

    def __exit__(self, *exc):
        for op, fn in self.saved.items():
            setattr(layers, op, fn)

    def _wrap(self, op, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            name = kwargs.get("layer", "")
            if op == "conv_backward":
                name = args[1].layer  # the cache names its layer
            self.totals[(op, name if op.startswith("conv") else "")] += time.perf_counter() - t0
            return out
        return timed


def profile_step(name: str, batch: int, steps: int, rounds: int) -> dict:
    """A dense step of `name` on one shard (bench.py's runner: its weights and batch), op by op."""
    runner = MinifreezeRunner(name, "numba", None, batch, shards=1)
    runner.train_steps(3)  # warm-up
    step_ms, ops = [], defaultdict(list)
    for _ in range(rounds):
        with OpTimer() as timer:
            t0 = time.perf_counter()
            runner.train_steps(steps)
            step_ms.append(1000 * (time.perf_counter() - t0) / steps)
        for key, seconds in timer.totals.items():
            ops[key].append(1000 * seconds / steps)
    step = statistics.median(step_ms)
    rows = [{"op": op, "layer": layer, "ms": round(statistics.median(v), 3),
             "share": round(statistics.median(v) / step, 4)}
            for (op, layer), v in sorted(ops.items(), key=lambda kv: -statistics.median(kv[1]))]
    return {"model": name, "batch": batch, "shards": 1, "step_ms": round(step, 3), "ops": rows}


def conv1_dw(batch: int, chunk: int, repeats: int) -> dict:
    """LeNet-5's conv1 weight gradient as one product and in K-blocks of `chunk` columns."""
    model = get_model("lenet5")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    w = init.init_params(model, 0, "xavier")["conv1.w"]  # (20, 1, 5, 5)
    out, cache = layers.conv_forward(x, w, np.zeros(w.shape[0], np.float32))
    d2 = rng.standard_normal((w.shape[0], cache.cols.shape[1])).astype(np.float32)  # (F, N*OH*OW)
    cols = cache.cols  # (25, N*OH*OW)

    def one():
        return d2 @ cols.T  # (F, 25)

    def blocked():
        acc = np.zeros((d2.shape[0], cols.shape[0]), np.float32)  # (F, 25)
        for s in range(0, cols.shape[1], chunk):
            acc += d2[:, s:s + chunk] @ cols[:, s:s + chunk].T
        return acc

    def median_ms(fn):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    exact = d2.astype(np.float64) @ cols.T.astype(np.float64)
    a, b = one(), blocked()
    return {"batch": batch, "k": int(cols.shape[1]), "chunk": chunk,
            "one_product_ms": round(median_ms(one), 3), "blocked_ms": round(median_ms(blocked), 3),
            "max_abs_diff": float(np.abs(a - b).max()),
            "one_product_err": float(np.abs(a - exact).max()),
            "blocked_err": float(np.abs(b - exact).max())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=("lenet5", "vgg"), default=["lenet5", "vgg"])
    p.add_argument("--batch", type=int, default=50, help="one shard of bench.py's batch of 100")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--out", metavar="FILE", help="also write the JSON object to FILE (atomically)")
    ns = p.parse_args(argv)
    for value, what in ((ns.batch, "--batch"), (ns.steps, "--steps"), (ns.rounds, "--rounds"),
                        (ns.chunk, "--chunk")):
        if value < 1:
            p.error(f"{what} must be a positive integer, got {value}")
    from threadpoolctl import threadpool_limits
    with parallel.kept_freed_memory(), threadpool_limits(limits=1, user_api="blas"):
        backend.set_backend("numba")
        result = {"argv": list(sys.argv[1:] if argv is None else argv),
                  "environment": environment(shards=1),
                  "steps": [profile_step(m, ns.batch, ns.steps, ns.rounds) for m in ns.models],
                  "conv1_dw": conv1_dw(ns.batch, ns.chunk, 7 * ns.rounds)}
    for s in result["steps"]:
        print(f"{s['model']}: step {s['step_ms']:.2f} ms (batch {s['batch']}, one shard)")
        for r in s["ops"]:
            print(f"  {r['op']:17s} {r['layer']:8s} {r['ms']:8.3f} ms  {100 * r['share']:5.1f}%")
    d = result["conv1_dw"]
    print(f"conv1 dW (K = {d['k']}): one product {d['one_product_ms']:.3f} ms, blocks of "
          f"{d['chunk']} {d['blocked_ms']:.3f} ms; max difference {d['max_abs_diff']:.3g} "
          f"(errors against float64: {d['one_product_err']:.3g} / {d['blocked_err']:.3g})")
    if ns.out:
        storage.write_atomic(ns.out, (json.dumps(result, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
