"""Two checkouts of minifreeze, one training step, timed in alternating processes.

    python benchmarks/ab_step.py BEFORE_DIR AFTER_DIR [--rounds 6] [--out FILE]

A change that should not touch speed (a refactor) is checked with it: each round starts a fresh
process per checkout (the order alternating, A B then B A, so that neither always runs second),
which imports that checkout's `minifreeze`, builds the same model, weights and masks through the
API both share (`get_model`, `init.init_params`, `saliency.saliency`, `masks.select_topk`,
`masks.apply_mode`, `trainer.HostTrainer`) and times `HostTrainer.step` on one batch of 100 for
`--steps` steps after a warm-up. Per checkout, model and regime it reports the median images per
second over the rounds and the ratio after / before; the spread of the rounds is the noise the
ratio must be read against. The machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CASES = (("lenet5", None, "freeze"), ("lenet5", "snip", "freeze"), ("lenet5", "snip", "prune"),
         ("vgg", None, "freeze"), ("vgg", "snip", "freeze"))
"""(model, score, mode): dense, FreezeNet's mask frozen, SNIP's mask pruned (sparse products)."""

CHILD = r"""
import json, sys, time
import numpy as np
from minifreeze import init, saliency, parallel
from minifreeze import masks as M
from minifreeze.models import get_model
from minifreeze.trainer import HostTrainer
steps, cases = int(sys.argv[1]), json.loads(sys.argv[2])
out = {}
with parallel.kept_freed_memory():
    for name, score, mode in cases:
        kwargs = {"input_shape": [3, 32, 32]} if name == "vgg" else {}
        model = get_model(name, **kwargs)
        theta0 = init.init_params(model, 0, "xavier")
        rng = np.random.default_rng(1)
        x = rng.standard_normal((100, *model.input_shape)).astype(np.float32)
        y = rng.integers(0, 10, 100)
        masks = None if score is None else M.select_topk(
            saliency.saliency(model, theta0, x, y, score=score, seed=0), 0.995)
        pruned = mode == "prune"
        trainer = HostTrainer(model, M.apply_mode(theta0, masks, mode), masks, momentum=0.9,
                              weight_decay=5e-4, shards=parallel.resolve_shards(model, 0, 100),
                              pruned=pruned, sparse_compute=pruned)
        for _ in range(3):
            trainer.step(x, y, 0.01)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step(x, y, 0.01)
        out[f"{name}/{score or 'dense'}/{mode}"] = 100 * steps / (time.perf_counter() - t0)
print(json.dumps(out))
"""


def measure(checkout: str, steps: int, cases) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    with tempfile.TemporaryDirectory() as cwd:  # so that no other checkout is on sys.path
        done = subprocess.run([sys.executable, "-c", CHILD, str(steps), json.dumps(cases)],
                              env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{checkout}: the timed child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--rounds", type=int, default=6, help="rounds, each one process per checkout")
    p.add_argument("--steps", type=int, default=20, help="timed steps per case and process")
    p.add_argument("--models", nargs="+", choices=("lenet5", "vgg"), default=["lenet5", "vgg"])
    p.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")
    ns = p.parse_args(argv)
    for path in (ns.before, ns.after):
        if not os.path.isfile(os.path.join(path, "minifreeze", "__init__.py")):
            p.error(f"{path}: not a minifreeze checkout (no minifreeze/__init__.py there)")
    if ns.rounds < 1 or ns.steps < 1:
        p.error(f"--rounds and --steps must be positive, got {ns.rounds} and {ns.steps}")
    cases = [c for c in CASES if c[0] in ns.models]
    samples = {"before": [], "after": []}
    for i in range(ns.rounds):
        order = ("before", "after") if i % 2 == 0 else ("after", "before")
        for which in order:
            samples[which].append(measure(getattr(ns, which), ns.steps, cases))
        print(f"round {i + 1}/{ns.rounds} done", file=sys.stderr, flush=True)
    rows = []
    for key in samples["before"][0]:
        b = [s[key] for s in samples["before"]]
        a = [s[key] for s in samples["after"]]
        rows.append({"case": key, "before_img_s": round(statistics.median(b), 1),
                     "after_img_s": round(statistics.median(a), 1),
                     "ratio": round(statistics.median(a) / statistics.median(b), 3),
                     "before_range": [round(min(b), 1), round(max(b), 1)],
                     "after_range": [round(min(a), 1), round(max(a), 1)]})
        print(f"{key:22s} before {rows[-1]['before_img_s']:9.1f}  after {rows[-1]['after_img_s']:9.1f}"
              f"  after/before {rows[-1]['ratio']:.3f}  (rounds: {min(b):.0f}-{max(b):.0f} / "
              f"{min(a):.0f}-{max(a):.0f})")
    if ns.out:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from minifreeze import storage
        from minifreeze.lab.environment import environment
        commits = {w: subprocess.run(["git", "-C", getattr(ns, w), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip() or None
                   for w in ("before", "after")}
        storage.write_atomic(ns.out, (json.dumps({
            "commits": commits, "models": ns.models, "rounds": ns.rounds,
            "steps": ns.steps, "environment": environment(), "rows": rows}, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
