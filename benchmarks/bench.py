"""Training-step and inference throughput per backend, against PyTorch when it is installed.

    python benchmarks/bench.py                 # the README table (make bench)
    python benchmarks/bench.py --quick         # LeNet-5 only, fewer steps: a smoke run
    python benchmarks/bench.py --json          # one JSON object on stdout, for machines

For each model (LeNet-5-Caffe, LeNet-300-100, the small VGG) and each available backend, one
training step is `trainer.HostTrainer.step`, the very step `train` runs (forward + backward +
masked SGD update with momentum 0.9 and weight decay 5e-4, the divergence checks included) on a
batch of 100 synthetic images; inference is `HostTrainer.predict` (eval mode). Regimes, all at
q = 0.995 but dense: "dense" trains every weight; "freezenet" trains 0.5% of the weights chosen as
FreezeNet and SNIP choose them (the top abs(theta * g) at the seed-0 Xavier init, on the timed
batch), the rest frozen; "grad_freeze" the top abs(g), frozen; "random" 0.5% chosen at random, so
evenly spread over the layers, frozen; "snip" SNIP's mask pruned, with sparse_compute on, so that
its sparse layers multiply over their kept weights only; "snip_dense" the same pruned network on
the dense path (`train`'s default), multiplying its zeros. The frozen regimes save only weight
gradients and update work; the pruned one saves products too. A second table gives, per regime,
the multiply-adds per image a step computes (forward, input gradient, weight gradient), the
measured step time and the bytes the model stores. When `torch` is importable the same architectures
(built from the same layer specs, with the same weights) run in PyTorch in the same process; all
candidates are timed in interleaved rounds so machine noise hits them alike, and the median round
is reported with the ratio to PyTorch. PyTorch is never a dependency of minifreeze.

Against the machine's own limit: the same run measures the float32 GEMM rate (a 2048 x 2048
product per thread count, `gemm_rate`), and each row's "of GEMM" is the share of that rate its
step reaches: multiply-adds per image times images per second, over the rate. 100% would be a step
that does nothing but its products, at BLAS's best speed.

Both sides run under the same malloc settings: `parallel.kept_freed_memory()`, which the command
line opts into too, is process-wide. Each figure is images per second. Peak resident memory and the kernel compile time (cold numba
cache, then warm) are measured in fresh child processes so that one candidate's memory does not
hide another's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minifreeze import backend, init, parallel, saliency, storage  # noqa: E402
from minifreeze import masks as M  # noqa: E402
from minifreeze.lab.environment import environment  # noqa: E402
from minifreeze.lab.tables import markdown_table  # noqa: E402
from minifreeze.models import get_model  # noqa: E402
from minifreeze.trainer import HostTrainer  # noqa: E402

MODELS = ("lenet5", "lenet300", "vgg")
Q = 0.995
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
PAUSE = 0.25
"""Seconds between timed runs: longer than the 200 ms an idle OpenMP thread may spin."""


# --- the minifreeze side ------------------------------------------------------------------------

REGIMES = {"dense": (None, "freeze"), "freezenet": ("snip", "freeze"),
           "grad_freeze": ("grad", "freeze"), "random": ("random", "freeze"),
           "snip": ("snip", "prune"), "snip_dense": ("snip", "prune_dense")}
"""Regime -> (saliency score of its q = 0.995 mask, mode). None: no mask, every weight trains.
"snip" is pruned and computes sparsely (sparse_compute): its pruned layers multiply over their
kept weights only; the frozen regimes cannot, their frozen weights take part in every product.
"snip_dense" is the same pruned network on the dense path (sparse_compute off, `train`'s
default): its zeros are multiplied like any weight."""


def bench_masks(model, params, x, y, score: str, q: float = Q) -> dict[str, np.ndarray]:
    """The top (1 - q) of the weights by `score` over all layers, on the timed batch.

    How many entries each layer trains decides the cost (a layer above the backend's
    sparse_dw_density gets a dense weight gradient). "snip" (abs(theta * g)) is SNIP's choice and
    FreezeNet's; "grad" (abs(g)) the other reading of FreezeNet's; "random" spreads the 0.5%
    evenly over the layers.
    """
    return M.select_topk(saliency.saliency(model, params, x, y, score=score, seed=0), q)


def cost(model, masks, mode: str, kernels) -> dict:
    """Multiply-adds per image that a training step computes, by part, as minifreeze computes
    them on `kernels` (its sparse-gradient and sparse-compute thresholds): forward products,
    input gradients (none for the first layer) and weight gradients."""
    fwd = dx = dw = 0
    shape, first = tuple(model.input_shape), True
    for ly in model.layers:
        out = ly.output_shape(shape)
        if ly.op in ("conv", "linear"):
            w = f"{ly.name}.w"
            n_w = int(np.prod(ly.param_shapes()[w]))
            positions = out[1] * out[2] if ly.op == "conv" else 1  # OH*OW per image
            nnz = n_w if masks is None or w not in masks else int(masks[w].sum())
            density = nnz / n_w
            sparse_products = mode == "prune" and density < kernels.sparse_compute_density
            product = (nnz if sparse_products else n_w) * positions
            sampled_dw = (nnz if density < kernels.sparse_dw_density else n_w) * positions
            if ly.args.get("algo") == "winograd" and not sparse_products:
                # 16 per (F, C, 2x2 tile); dW always the dense transformed product, then masked
                # (a pruned layer's sparse products skip Winograd: fast_layers' pruned path)
                tiles = ((out[1] + 1) // 2) * ((out[2] + 1) // 2)
                product = sampled_dw = n_w // 9 * 16 * tiles
            fwd += product
            dx += 0 if first else product
            dw += sampled_dw
            first = False
        shape = out
    return {"forward_macs": fwd, "input_grad_macs": dx, "weight_grad_macs": dw,
            "total_macs": fwd + dx + dw}


class TimedTrainer:
    """A minifreeze trainer (`self.trainer`: HostTrainer or cuda_train.DeviceTrainer) timed on
    one batch (`self.x`, `self.y`) under the backend `self.backend`: what `interleaved` calls."""

    def train_steps(self, steps):
        with backend.use_backend(self.backend):
            for _ in range(steps):
                self.trainer.step(self.x, self.y, LR)

    def infer_steps(self, steps):
        with backend.use_backend(self.backend):
            for _ in range(steps):
                self.trainer.predict(self.x, batch_size=len(self.x))


class MinifreezeRunner(TimedTrainer):
    """minifreeze's HostTrainer, the batch in `shards` shards (0: automatic, parallel.py),
    labelled e.g. "numba x2" for two shards on the numba backend."""

    def __init__(self, name, backend_name, score, batch, seed=0, shards=0, mode="freeze",
                 conv="im2col"):
        self.backend, self.mode = backend_name, mode
        kwargs = {"input_shape": [3, 32, 32]} if name == "vgg" else {}
        if conv != "im2col":
            kwargs["conv"] = conv
        self.model = get_model(name, **kwargs)
        self.shards = parallel.resolve_shards(self.model, shards, batch)
        self.label = f"{backend_name} x{self.shards}" + ("" if conv == "im2col" else f" {conv[:4]}")
        theta0 = init.init_params(self.model, seed, "xavier")  # float32
        rng = np.random.default_rng(seed + 1)
        self.x = rng.standard_normal((batch, *self.model.input_shape)).astype(np.float32)
        self.y = rng.integers(0, 10, batch)
        self.masks = None if score is None else bench_masks(self.model, theta0, self.x,
                                                             self.y, score)
        stored_mode = "prune" if mode == "prune_dense" else mode  # the same network, pruned
        self.params = M.apply_mode(theta0, self.masks, stored_mode)
        pruned = stored_mode == "prune" and self.masks is not None
        with backend.use_backend(self.backend):
            self.trainer = HostTrainer(self.model, self.params, self.masks, momentum=MOMENTUM,
                                       weight_decay=WEIGHT_DECAY, shards=self.shards,
                                       pruned=pruned, sparse_compute=pruned and mode == "prune")
        self.stored_bytes = len(storage.to_bytes(storage.Checkpoint(
            self.model.name, self.params, masks=self.masks or {}, seed=seed, mode=stored_mode,
            model_kwargs=kwargs)))


# --- the PyTorch side (only when torch is installed) --------------------------------------------

def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


class TorchRunner:
    """The same layer spec as an nn.Sequential with the same weights, trained by torch.optim.SGD."""

    def __init__(self, torch, ref: MinifreezeRunner):
        nn = torch.nn
        self.torch = torch
        self.label = "torch"
        mods = []
        for ly in ref.model.layers:
            a = ly.args
            if ly.op == "conv":
                mods.append(nn.Conv2d(a["in"], a["out"], a["k"], a["stride"], a["pad"]))
            elif ly.op == "linear":
                mods.append(nn.Linear(a["in"], a["out"]))
            elif ly.op == "relu":
                mods.append(nn.ReLU())
            elif ly.op == "maxpool":
                mods.append(nn.MaxPool2d(a["size"], a["stride"]))
            elif ly.op == "flatten":
                mods.append(nn.Flatten())
            else:
                raise ValueError(f"bench: no torch equivalent for {ly.op}")
        self.net = nn.Sequential(*mods)
        weighted = [ly for ly in ref.model.layers if ly.op in ("conv", "linear")]
        mod_w = [m for m in self.net if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.masks = []
        with torch.no_grad():
            for ly, m in zip(weighted, mod_w):
                m.weight.copy_(torch.from_numpy(ref.params[f"{ly.name}.w"]))
                m.bias.copy_(torch.from_numpy(ref.params[f"{ly.name}.b"]))
                if ref.masks is not None:
                    self.masks.append((m.weight, torch.from_numpy(np.array(ref.masks[f"{ly.name}.w"]))))
        self.opt = self.optimizer()
        self.x = torch.from_numpy(ref.x)
        self.y = torch.from_numpy(ref.y)

    def optimizer(self):
        """SGD with momentum; a masked weight decays in `train_steps`, before its mask, as
        minifreeze's masked SGD does: SGD's own weight decay would move frozen weights too."""
        masked = {id(w) for w, _ in self.masks}
        params = list(self.net.parameters())
        groups = [{"params": [p for p in params if id(p) not in masked]},
                  {"params": [p for p in params if id(p) in masked], "weight_decay": 0.0}]
        return self.torch.optim.SGD([g for g in groups if g["params"]], lr=LR,
                                    momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def train_steps(self, steps):
        torch, F = self.torch, self.torch.nn.functional
        self.net.train()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            F.cross_entropy(self.net(self.x), self.y).backward()
            for w, m in self.masks:  # freeze in PyTorch: decay, then zero the gradient
                w.grad.add_(w.detach(), alpha=WEIGHT_DECAY).mul_(m)
            self.opt.step()

    def infer_steps(self, steps):
        self.net.eval()
        with self.torch.no_grad():
            for _ in range(steps):
                self.net(self.x)


# --- timing -------------------------------------------------------------------------------------

def interleaved(runners, what, steps, rounds, batch):
    """Median images/s of each runner over `rounds` interleaved rounds of `steps` steps."""
    for r in runners:  # an untimed round: compile, grow the heap to its working size, fill caches
        getattr(r, what)(steps)
    times = [[] for _ in runners]
    for _ in range(rounds):
        for i, r in enumerate(runners):
            # Let the threads the previous candidate left spinning (OpenMP, BLAS) go to sleep.
            time.sleep(PAUSE)
            t0 = time.perf_counter()
            getattr(r, what)(steps)
            times[i].append(time.perf_counter() - t0)
    return [batch * steps / statistics.median(t) for t in times]


def child_measure(args_list, env=None):
    """Run this script in a fresh process in --child mode; return its JSON answer."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args_list], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def child_main(ns):
    """--child memory MODEL BACKEND | --child compile: one measurement in this fresh process."""
    t0 = time.perf_counter()
    if ns.child[0] == "compile":
        # One float32 training step of every model touches every kernel the training uses.
        for name in MODELS:
            for score, mode in ((None, "freeze"), ("snip", "freeze"), ("snip", "prune")):
                MinifreezeRunner(name, "numba", score, 4, mode=mode).train_steps(1)
        print(json.dumps({"seconds": time.perf_counter() - t0}))
        return
    _, name, be = ns.child
    r = MinifreezeRunner(name, be, None, ns.batch)
    r.train_steps(3)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    from the parent across fork + exec, so a child of a big parent would report the parent's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_rate(threads: int, n: int = 2048, repeats: int = 3) -> float:
    """The machine's float32 matrix-product rate with `threads` BLAS threads: multiply-adds per
    second of the best of `repeats` (n, n) @ (n, n) products. The limit a training step's
    products can reach; a step's multiply-adds divided by it give the shortest step possible."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)  # (n, n)
    b = rng.standard_normal((n, n), dtype=np.float32)  # (n, n)
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b  # warm-up: thread start, page faults
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return n ** 3 / best


def bench_tables(bench: dict) -> dict[str, str]:
    """The tables of one benchmark run (`benchmarks/bench.py --out`): `bench`, per model, regime
    and minifreeze runner, images per second training (and PyTorch's in the same run), the
    ratios to PyTorch and to the runner's own dense step, and the share of the machine's float32
    GEMM rate the step reaches; `bench_cost`, the multiply-adds per image a step computes
    (forward + input gradient + weight gradient), the step in ms and the bytes the model
    stores. Inference, memory and compile times follow as one line each. `bench_brief`, for a
    front page: the dense and the SNIP-pruned rows, their share of the GEMM rate and the ratio to
    PyTorch."""
    rows = bench["rows"]
    torch = {(r["model"], r["regime"]): r for r in rows if r["impl"] == "torch"}
    ours = [r for r in rows if r["impl"] != "torch"]

    def num(v, fmt="{:,.0f}"):
        return "-" if v is None else fmt.format(v)
    speed, costs = [], []
    for r in ours:
        t = torch.get((r["model"], r["regime"]))
        row = {"model": r["model"], "regime": r["regime"], "runner": r["impl"]}
        speed.append({**row, "train_img/s": num(r["train_img_s"]),
                      "torch_img/s": num(t and t["train_img_s"]),
                      "vs_torch": num(r["train_vs_torch"], "{:.2f}x"),
                      "vs_own_dense": "" if r["regime"] == "dense" else
                      num(r["train_vs_own_dense"], "{:.2f}x"),
                      "of_GEMM": num(r.get("gemm_fraction"), "{:.1%}")})
        costs.append({**row, "MAC_per_image_(fwd_+_dx_+_dW)": " + ".join(
            f"{r[k] / 1e6:.2f}M" for k in ("forward_macs", "input_grad_macs", "weight_grad_macs")),
            "step_ms": f"{r['step_ms']:.1f}", "stored_bytes": f"{r['stored_bytes']:,}"})
    left = ("model", "regime", "runner")
    speed_cols = (*left, "train_img/s", "torch_img/s", "vs_torch", "vs_own_dense", "of_GEMM")
    brief_cols = (*left, "of_GEMM", "vs_torch")
    cost_cols = (*left, "MAC_per_image_(fwd_+_dx_+_dW)", "step_ms", "stored_bytes")
    brief = [r for r in speed if r["regime"] in ("dense", "snip")]
    infer = [f"{r['model']} {r['impl']} {num(r['infer_img_s'])}" +
             ("" if torch.get((r["model"], "dense")) is None else
              f" (torch {num(torch[(r['model'], 'dense')]['infer_img_s'])})")
             for r in ours if r["regime"] == "dense" and r.get("infer_img_s")]
    machine = bench["machine"]
    env = machine.get("environment") or {}
    blas = (env.get("blas") or [{}])[0]
    notes = [f"Batch {bench['batch']}, median of {bench['rounds']} interleaved rounds of "
             f"{bench['steps']} steps (`{bench.get('command', 'benchmarks/bench.py')}`); "
             f"{machine['cpus']} CPUs ({env.get('cpu', 'CPU not recorded')}, OpenBLAS "
             f"{blas.get('version', '?')} {blas.get('architecture', '?')} kernels, Numba for "
             f"{env.get('numba_cpu', '?')}); PyTorch {machine.get('torch') or 'not installed'}; "
             f"float32 GEMM rate " + ", ".join(f"{t} thread{'s' if int(t) > 1 else ''} {v} G "
                                               f"multiply-adds/s"
                                               for t, v in machine["gemm_gmacs"].items()) + ".",
             "Inference, dense, images/s: " + "; ".join(infer) + "."]
    if bench.get("peak_rss_mb"):
        notes.append("Peak resident memory training (fresh process, MB): " + ", ".join(
            f"{k} {v}" for k, v in bench["peak_rss_mb"].items()) + ".")
    if bench.get("compile_s"):
        notes.append(f"Numba kernels of all models: {bench['compile_s']['cold_cache']} s to "
                     f"compile with a cold cache, {bench['compile_s']['warm_cache']} s to load "
                     f"from a warm one.")
    return {"bench": markdown_table(speed, speed_cols, left=left) + "\n\n" + "\n".join(notes),
            "bench_cost": markdown_table(costs, cost_cols, left=left),
            "bench_brief": markdown_table(brief, brief_cols, left=left)}


def write_tables(path, bench: dict) -> list:
    """`bench_tables` as `bench.md`, `bench_cost.md`, `bench_brief.md` beside the record `path`:
    the tables a page embeds (`<!-- table: DIR bench -->`, `minifreeze.lab.pages.fill_page`)."""
    folder = os.path.dirname(os.path.abspath(path))
    written = []
    for kind, table in bench_tables(bench).items():
        written.append(os.path.join(folder, f"{kind}.md"))
        storage.write_atomic(written[-1], (table + "\n").encode())
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=None)
    p.add_argument("--backends", nargs="+", default=None,
                   help="minifreeze backends (default: every available one)")
    p.add_argument("--regimes", nargs="+", choices=REGIMES, default=None,
                   help="the regimes to time (default: all)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--shards", type=int, nargs="+", default=[0],
                   help="shards per batch, one thread each; several values give one row each "
                        "(default 0: one per CPU)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median taken)")
    p.add_argument("--conv", nargs="+", choices=("im2col", "winograd"), default=["im2col", "winograd"],
                   help="how vgg computes its convolutions; one runner each (label suffix 'wino')")
    p.add_argument("--quick", action="store_true", help="LeNet-5 only, few steps")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", metavar="FILE",
                   help="also write the JSON object to FILE (atomically), e.g. "
                        "notebooks/results/bench/bench.json, whose tables docs/speed.md embeds")
    p.add_argument("--tables", metavar="FILE",
                   help="only write the tables of a bench.json FILE beside it (KIND.md, see "
                        "write_tables), measuring nothing")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.tables:
        write_tables(ns.tables, json.loads(open(ns.tables).read()))
        return
    ns.argv = list(sys.argv[1:] if argv is None else argv)
    # As the command line does; it is process-wide, so PyTorch gets the same malloc.
    with parallel.kept_freed_memory():
        return child_main(ns) if ns.child else run(ns)


def run(ns):
    models = ns.models or (("lenet5",) if ns.quick else MODELS)
    steps = ns.steps or (5 if ns.quick else 20)
    rounds = ns.rounds or (3 if ns.quick else 7)
    avail = backend.available_backends()
    backends = ns.backends or [b for b, why in avail.items() if why is None]
    for b in backends:
        backend.set_backend(b)  # raises with the reason when unavailable
    torch = None if ns.no_torch else torch_or_none()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if ns.json else print

    rows = []
    for name in models:
        for regime, (score, mode) in REGIMES.items():
            if ns.regimes and regime not in ns.regimes:
                continue
            masked = score is not None
            runners = []
            for b in backends:
                for t in ns.shards:
                    for conv in ns.conv if name == "vgg" else ["im2col"]:
                        if conv != "im2col" and b == "cuda":
                            continue  # the device trains by im2col only
                        r = MinifreezeRunner(name, b, score, ns.batch, shards=t, mode=mode, conv=conv)
                        if r.label not in [q.label for q in runners]:  # e.g. 0 and 2 on 2 CPUs
                            runners.append(r)
            if torch is not None:
                runners.append(TorchRunner(torch, runners[0]))
            train = interleaved(runners, "train_steps", steps, rounds, ns.batch)
            infer = interleaved(runners, "infer_steps", steps, rounds, ns.batch) \
                if not masked else [None] * len(runners)  # masks do not change inference
            for r, tr, inf in zip(runners, train, infer):
                row = {"model": name, "regime": regime, "impl": r.label,
                       "train_img_s": round(tr, 1),
                       "infer_img_s": None if inf is None else round(inf, 1)}
                if isinstance(r, MinifreezeRunner):
                    row.update(cost(r.model, r.masks, r.mode, backend.require(r.backend)),
                               shards=r.shards, stored_bytes=r.stored_bytes,
                               step_ms=round(1000 * ns.batch / tr, 2))
                rows.append(row)
            log(f"{name:9s} {regime:11s} " + "  ".join(
                f"{r.label}: train {tr:8.0f}" + ("" if inf is None else f" infer {inf:8.0f}")
                for r, tr, inf in zip(runners, train, infer)))

    def get(model, regime, impl, key="train_img_s"):
        return next((r[key] for r in rows if (r["model"], r["regime"], r["impl"]) ==
                     (model, regime, impl)), None)

    cpus = os.cpu_count() or 1
    threads = sorted({min(r["shards"], cpus) for r in rows if "shards" in r})
    rates = {t: gemm_rate(t) for t in threads}  # the same run, so the same machine load
    for r in rows:
        if "total_macs" in r:  # the step's multiply-adds at the GEMM rate, over the step's time
            r["gemm_fraction"] = round(r["total_macs"] * r["train_img_s"] /
                                       rates[min(r["shards"], cpus)], 3)
    for r in rows:
        t = get(r["model"], r["regime"], "torch")
        r["train_vs_torch"] = round(r["train_img_s"] / t, 2) if t else None
        d = get(r["model"], "dense", r["impl"])
        r["train_vs_own_dense"] = round(r["train_img_s"] / d, 2) if d else None

    extra = {"peak_rss_mb": {}, "compile_s": None}
    for name in models:
        for b in backends:
            extra["peak_rss_mb"][f"{name}/{b}"] = round(
                child_measure(["--child", "memory", name, b, "--batch", str(ns.batch)])
                ["peak_rss_mb"], 1)
    if "numba" in backends:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            cold = child_measure(["--child", "compile"], env)["seconds"]
            warm = child_measure(["--child", "compile"], env)["seconds"]
        extra["compile_s"] = {"cold_cache": round(cold, 2), "warm_cache": round(warm, 2)}

    report = {"batch": ns.batch, "steps": steps, "rounds": rounds, "q": Q,
              "command": "python benchmarks/bench.py " + " ".join(ns.argv),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__,
                          "gemm_gmacs": {t: round(v / 1e9, 2) for t, v in rates.items()},
                          "torch": None if torch is None else torch.__version__,
                          "environment": environment(backend=",".join(backends))},
              "rows": rows, **extra}
    if ns.out:
        storage.write_atomic(ns.out, (json.dumps(report, indent=2) + "\n").encode())
        write_tables(ns.out, report)
    if ns.json:
        print(json.dumps(report, indent=2))
        return
    print()
    print(f"images/s, batch {ns.batch}, median of {rounds} interleaved rounds of {steps} steps")
    print(f"{'model':9s} {'regime':11s} {'impl':13s} {'train':>8s} {'infer':>8s} "
          f"{'vs torch':>9s} {'vs dense':>9s}")
    for r in rows:
        f = lambda v, s="": "-" if v is None else f"{v:.2f}{s}"  # noqa: E731
        print(f"{r['model']:9s} {r['regime']:11s} {r['impl']:13s} {r['train_img_s']:8.0f} "
              f"{'-' if r['infer_img_s'] is None else format(r['infer_img_s'], '8.0f'):>8s} "
              f"{f(r['train_vs_torch'], 'x'):>9s} {f(r['train_vs_own_dense'], 'x'):>9s}")
    print()
    print("What a step computes (multiply-adds per image, as minifreeze computes them) and what "
          "a model stores")
    print("float32 GEMM rate of this machine, same run: " + ", ".join(
        f"{t} thread{'s' if t > 1 else ''} {v / 1e9:.1f} G multiply-adds/s" for t, v in rates.items()))
    print(f"{'model':9s} {'regime':11s} {'impl':13s} {'forward':>9s} {'input grad':>11s} "
          f"{'weight grad':>12s} {'total':>9s} {'step ms':>8s} {'stored B':>10s} {'of GEMM':>8s}")
    for r in rows:
        if "total_macs" in r:
            m = lambda v: f"{v / 1e6:.3f}M"  # noqa: E731
            print(f"{r['model']:9s} {r['regime']:11s} {r['impl']:13s} {m(r['forward_macs']):>9s} "
                  f"{m(r['input_grad_macs']):>11s} {m(r['weight_grad_macs']):>12s} "
                  f"{m(r['total_macs']):>9s} {r['step_ms']:>8.2f} {r['stored_bytes']:>10,} "
                  f"{r['gemm_fraction']:>8.1%}")
    print("peak RSS training (fresh process, MB):",
          ", ".join(f"{k} {v}" for k, v in extra["peak_rss_mb"].items()))
    if extra["compile_s"]:
        print(f"numba kernels, all models: {extra['compile_s']['cold_cache']} s with a cold "
              f"cache, {extra['compile_s']['warm_cache']} s with a warm one")


if __name__ == "__main__":
    main()
