"""Why dense LeNet-5-Caffe cannot train under the paper's protocol, measured.

Dense LeNet-5 at the paper's hyperparameters (lr 0.1 constant, no warm-up, momentum 0.9, weight
decay 5e-4, batch 100) for STEPS steps, with and without a ReLU after each convolution, under five
initialisations, two seeds each. Prints a Markdown table and writes it, with every number, to
notebooks/results/conv_relu/divergence.json (and .md):

    python benchmarks/conv_relu_divergence.py            # about 3 minutes on 2 free cores

Initialisations: the library's schemes (xavier, kaiming, lecun: SNIP's truncated normal) drawn
from the seed, and two scales drawn as xavier's stream rescaled per tensor: N(0, 1/fan_in)
untruncated, and PyTorch's default scale, std 1/sqrt(3 fan_in) (kaiming_uniform with a = sqrt(5)
has that std; drawn here as a normal of that std).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from minifreeze import backend, init, models, parallel
from minifreeze.data import load_dataset
from minifreeze.lab.tables import markdown_table
from minifreeze.storage import write_atomic
from minifreeze.train import make_trainer
from minifreeze.trainer import NonFiniteStep

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks" / "results" / "conv_relu"

RESCALED = {
    "normal_1/fan_in": lambda fan_in, fan_out: math.sqrt(1.0 / fan_in),
    "pytorch_scale": lambda fan_in, fan_out: math.sqrt(1.0 / (3.0 * fan_in)),
}
INITS = ("xavier", "normal_1/fan_in", "lecun", "pytorch_scale", "kaiming")


def theta0(model, seed: int, name: str) -> dict[str, np.ndarray]:
    """The initial parameters of `name`: a library scheme, or xavier's stream rescaled."""
    if name in init.SCHEMES:
        return init.init_params(model, seed, name)
    params = init.init_params(model, seed, "xavier")
    for k in model.weight_names():
        fan_in, fan_out = init.fans(params[k].shape)
        scale = RESCALED[name](fan_in, fan_out) / init.init_std(params[k].shape, "xavier")
        params[k] = (params[k].astype(np.float64) * scale).astype(np.float32)
    return params


def one(conv_relu: bool, scheme: str, seed: int, data, steps: int, n_test: int) -> dict:
    model = models.get_model("lenet5", conv_relu=conv_relu)
    trainer = make_trainer(model, theta0(model, seed, scheme), momentum=0.9, weight_decay=5e-4,
                           shards=1)
    order = np.random.default_rng([seed, 2]).permutation(len(data.y_train))  # (60000,)
    losses = []
    for t in range(steps):
        idx = order[t * 100:(t + 1) * 100]
        try:
            loss, _ = trainer.step(data.x_train[idx], data.y_train[idx], 0.1)
        except NonFiniteStep:
            return {"diverged_at_step": t + 1}
        losses.append(loss)
    logits = trainer.predict(data.x_test[:n_test], batch_size=1000)  # (n_test, 10)
    return {"loss_last_50": float(np.mean(losses[-50:])),
            "test_accuracy": float((logits.argmax(1) == data.y_test[:n_test]).mean())}


def divergence_cell(r: dict) -> str:
    """One seed of one row of the divergence table: where it diverged, or stuck, or how it did."""
    if "diverged_at_step" in r:
        return f"NaN at step {r['diverged_at_step']}"
    if r["loss_last_50"] > 2.2:
        return f"stuck at loss {r['loss_last_50']:.3f}"
    return f"loss {r['loss_last_50']:.2f}, {100 * r['test_accuracy']:.1f}%"


def divergence_table(record: dict) -> str:
    """Dense LeNet-5 at lr 0.1 with and without conv ReLU, per initialisation and seed
    (`benchmarks/conv_relu_divergence.py`'s record) as Markdown."""
    seeds = [k for k in record["rows"][0] if k.startswith("seed ")]
    columns = ("conv_ReLU", "init", *(s.replace(" ", "_") for s in seeds))
    rows = [{"conv_ReLU": "yes" if row["conv_relu"] else "no", "init": row["init"],
             **{s.replace(" ", "_"): divergence_cell(row[s]) for s in seeds}}
            for row in record["rows"]]
    return markdown_table(rows, columns, left=columns)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--test", type=int, default=2000, help="test images evaluated")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    data = load_dataset("mnist")
    rows, t0 = [], time.perf_counter()
    with parallel.blas_threads(1):
        for conv_relu in (False, True):
            for scheme in INITS:
                row = {"conv_relu": conv_relu, "init": scheme}
                for seed in args.seeds:
                    row[f"seed {seed}"] = one(conv_relu, scheme, seed, data, args.steps,
                                              args.test)
                rows.append(row)
                print(f"conv ReLU {'yes' if conv_relu else 'no'}, {scheme}: "
                      + "; ".join(divergence_cell(row[f'seed {s}']) for s in args.seeds),
                      file=sys.stderr)
    from minifreeze.lab.environment import environment
    record = {"steps": args.steps, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
              "batch_size": 100, "warmup_steps": 0, "test_images": args.test, "rows": rows,
              "seconds": time.perf_counter() - t0,
              "environment": environment(shards=1, backend=backend.get_backend())}
    args.out.mkdir(parents=True, exist_ok=True)
    table = divergence_table(record)
    write_atomic(args.out / "divergence.json", (json.dumps(record, indent=2) + "\n").encode())
    write_atomic(args.out / "divergence.md", (table + "\n").encode())
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
