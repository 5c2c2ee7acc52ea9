"""Which initialisation lets the paper protocol's dense baseline train? Dead units, measured.

Dense LeNet-5 with conv ReLU, the paper protocol's first epoch (600 steps, lr 0.1 with no
warm-up, momentum 0.9, weight decay 5e-4, batch 100, the training loop's own shuffle), for each
variant and seed, through the library's own loop (`train.prepare` + `train.train_steps`). After
steps 8, 30 and 100 and at the end of the epoch it counts the dead units of every ReLU layer on
the first 1,000 training images (`dead_units.dead_units`), and after the epoch the test accuracy
on all 10,000 test images. Writes notebooks/results/dead_units/dead_units.json (every number,
the command and where it ran) and dead_units.md, and prints the table:

    python benchmarks/dead_units_init.py            # about 10 minutes on one free core

Variants: the library's schemes xavier (Glorot normal), kaiming (He normal) and lecun
(variance scaling on fan-in, truncated normal: SNIP's code's initialiser); PyTorch's default
scale (std 1/sqrt(3 fan_in), drawn as xavier's stream rescaled per tensor, as in
`conv_relu_divergence.py`); and xavier with a 500-step linear warm-up of the learning rate, a
deviation from the protocol, measured to see whether it keeps the units alive.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv_relu_divergence import theta0  # noqa: E402  (xavier's stream rescaled)

from minifreeze import backend, parallel  # noqa: E402
from minifreeze import train as T  # noqa: E402
from minifreeze.data import load_dataset  # noqa: E402
from minifreeze.dead_units import PROBE_IMAGES, DeadUnitsProbe  # noqa: E402
from minifreeze.lab.tables import markdown_table  # noqa: E402
from minifreeze.storage import write_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks" / "results" / "dead_units"

VARIANTS = {
    "xavier": dict(init="xavier"),
    "kaiming": dict(init="kaiming"),
    "lecun": dict(init="lecun"),
    "pytorch_scale": dict(init="xavier", rescale="pytorch_scale"),
    "xavier, 500-step warm-up": dict(init="xavier", warmup_steps=500),
}
"""Each variant: the config fields it changes, and `rescale` for a scale the library has no
scheme for (theta0 drawn as xavier's stream, rescaled per tensor)."""

PROBE_AT = (8, 30, 100)


def one(variant: str, seed: int, data) -> dict:
    """The first epoch of one variant and seed: dead units per layer at each probe point, the
    epoch's mean train loss and the test accuracy after it."""
    v = dict(VARIANTS[variant])
    rescale = v.pop("rescale", None)
    c = T.protocol_config("paper", model="lenet5", model_kwargs={"conv_relu": True},
                          method="dense", seed=seed, epochs=1, shards=1, **v).resolved()
    setup = T.prepare(c, data)
    if rescale is not None:
        params = theta0(setup.model, seed, rescale)
        setup = dataclasses.replace(setup, theta0=params, params={k: a.copy() for k, a in params.items()})
    probe = DeadUnitsProbe(setup.model, data.x_train[:PROBE_IMAGES], steps=PROBE_AT)
    try:
        result = T.train_steps(c, data, setup, progress=False, hooks=[probe])
        row = result.history[-1]
        out = {"train_loss": row["train_loss"], "test_accuracy": row["test_accuracy"]}
    except T.TrainingDiverged as err:
        out = {"diverged": {"step": err.step, "why": err.why}}
    return {"variant": variant, "seed": seed, "init": c.init, "rescale": rescale,
            "warmup_steps": c.warmup_steps, "probes": probe.rows, **out}


def dead_units_table(record: dict) -> str:
    """Dense LeNet-5 (conv ReLU), the paper protocol's first epoch, per initialisation and seed
    (`benchmarks/dead_units_init.py`'s record): the share of conv2's channels dead at each probe
    step, of every layer's units dead after the epoch, the epoch's train loss and the test
    accuracy after it, as Markdown."""
    def share(probe, layer):
        return f"{100 * probe['dead'][layer] / probe['units'][layer]:.0f}%"

    rows = []
    for r in record["rows"]:
        probes = {p["at"]: p for p in r["probes"]}
        end = r["probes"][-1]
        row = {"init": r["variant"], "seed": r["seed"]}
        for s in record["probe_steps"]:
            p = probes.get(f"step {s}")
            row[f"conv2_at_step_{s}"] = "-" if p is None else share(p, "conv2")
        row.update({f"{k}_after_epoch_1": share(end, k) for k in end["dead"]})
        if "diverged" in r:
            row.update(train_loss=f"NaN at step {r['diverged']['step']}", test_accuracy="-")
        else:
            row.update(train_loss=f"{r['train_loss']:.3f}",
                       test_accuracy=f"{100 * r['test_accuracy']:.1f}%")
        rows.append(row)
    return markdown_table(rows, tuple(rows[0]), left=("init",))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    data = load_dataset("mnist")
    rows, t0 = [], time.perf_counter()
    with parallel.blas_threads(1):
        for variant in args.variants:
            for seed in args.seeds:
                rows.append(one(variant, seed, data))
                r = rows[-1]
                end = r["probes"][-1]
                print(f"{variant}, seed {seed}: dead at the end of epoch 1 "
                      + ", ".join(f"{k} {d}/{end['units'][k]}" for k, d in end["dead"].items())
                      + f"; test {r.get('test_accuracy', float('nan')):.4f}", file=sys.stderr)
    from minifreeze.lab.environment import environment
    c = T.protocol_config("paper")
    record = {"kind": "dead_units", "network": "lenet5_relu", "method": "dense",
              "steps": 600, "lr": c.lr, "momentum": c.momentum, "weight_decay": c.weight_decay,
              "batch_size": c.batch_size, "probe_images": PROBE_IMAGES, "probe_steps": PROBE_AT,
              "command": " ".join(["python benchmarks/dead_units_init.py", *(argv or sys.argv[1:])]),
              "rows": rows, "seconds": time.perf_counter() - t0,
              "environment": environment(shards=1, backend=backend.get_backend())}
    args.out.mkdir(parents=True, exist_ok=True)
    table = dead_units_table(record)
    write_atomic(args.out / "dead_units.json", (json.dumps(record, indent=2) + "\n").encode())
    write_atomic(args.out / "dead_units.md", (table + "\n").encode())
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
