"""The cuda backend on a real GPU: training throughput, agreement with the host, determinism.

    python benchmarks/gpu.py            # on a machine with an NVIDIA GPU: make gpu
    python benchmarks/gpu.py --quick    # LeNet-5 only, fewer steps and rounds

Three measurements, for LeNet-5-Caffe on MNIST's 1x28x28 and the small VGG at Fashion-MNIST's
1x28x28 (the VGG `make fashion` trains), each dense and FreezeNet at q = 0.995 (SNIP's
abs(theta * g) on the batch, the rest frozen; Xavier init, seed 0), batch 100:

1. Throughput: images per second of one training step (forward, backward, masked SGD with
   momentum 0.9 and weight decay 5e-4) and of inference, for `cuda_train.DeviceTrainer` (what
   `train --backend cuda` trains with), for `trainer.HostTrainer` on the numba backend on the same
   machine's CPU cores (automatic shards), and, where PyTorch with CUDA is importable, for the
   same layers in PyTorch on the same GPU (bench.py's `TorchRunner`: the same weights, frozen
   weights by a masked, decayed gradient; TF32 off, so every candidate multiplies in float32).
   Timed in interleaved rounds, the median kept (bench.py's `interleaved`). A step's dense
   multiply-adds per image (bench.py's `cost`: the device computes every product densely) times
   images per second give its rate, beside the float32 matrix-product rate of the GPU (PyTorch's,
   cuBLAS, on 4096 x 4096) and of this project's own tiled kernel on one 2048 x 2048 product.
2. Agreement: from the same theta0, STEPS steps on the same real training batches on the device
   and on the NumPy reference (backend numpy, one shard): the largest parameter difference over
   the largest parameter, the largest difference of the per-step losses, and whether every frozen
   weight on the device is still its theta0, bit for bit.
3. Determinism: the same device steps run twice give the same parameters, bit for bit (SHA-256):
   no kernel uses atomics, so every sum is added in one order.

Writes notebooks/results/gpu/gpu.json (every number, the command, the GPU and CPU it ran on) and
the tables gpu.md and gpu_agreement.md that docs/gpu.md embeds. Needs a GPU: on Numba's CUDA
simulator only `tests/test_cuda.py` runs these functions, on a tiny network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import (  # noqa: E402
    LR, MOMENTUM, Q, WEIGHT_DECAY, TimedTrainer, TorchRunner, cost, interleaved)

from minifreeze import backend, init, parallel, saliency  # noqa: E402
from minifreeze import masks as M  # noqa: E402
from minifreeze.data import load_dataset  # noqa: E402
from minifreeze.lab.tables import markdown_table  # noqa: E402
from minifreeze.models import get_model  # noqa: E402
from minifreeze.storage import write_atomic  # noqa: E402
from minifreeze.trainer import HostTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks" / "results" / "gpu"
NETWORKS = {"lenet5": ("lenet5", {}, "mnist"),
            "vgg": ("vgg", {"input_shape": [1, 28, 28]}, "fashion-mnist")}
"""Network -> (model name, model kwargs, the data set it trains on here)."""
STEPS = {"lenet5": 50, "vgg": 5}
"""Network -> training steps per timed round (about a second each on the slowest candidate)."""
AGREE_STEPS = {"lenet5": 100, "vgg": 10}
"""Network -> steps compared with the NumPy reference (its VGG step takes seconds)."""
REGIMES = {"dense": None, "freezenet": "snip"}
"""Regime -> the score of its q = 0.995 mask (None: every weight trains)."""
HP = {"momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY}


def setup(model, x, y, score, q: float = Q, seed: int = 0) -> tuple[dict, dict | None]:
    """(theta0, masks) of one regime: Xavier theta0 from `seed`; the top 1 - q by `score` on
    (x, y) trainable and the rest frozen, or no masks (dense) when score is None."""
    theta0 = init.init_params(model, seed, "xavier")
    masks = None if score is None else M.select_topk(
        saliency.saliency(model, theta0, x, y, score=score, seed=seed), q)
    return theta0, masks


def digest(params: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name], dtype=np.float32).tobytes())
    return h.hexdigest()


# --- the candidates -----------------------------------------------------------------------------

class DeviceRunner(TimedTrainer):
    """cuda_train.DeviceTrainer: `step` copies the batch in and [loss, correct] out, so each step
    ends synchronised with the host."""

    def __init__(self, model, params, masks, x, y):
        from minifreeze.cuda_train import DeviceTrainer
        self.trainer = DeviceTrainer(model, params, masks, **HP)
        self.backend = self.label = "cuda"
        self.x, self.y = x, y


class HostRunner(TimedTrainer):
    """trainer.HostTrainer on the numba backend, the batch in automatic shards (all cores)."""

    def __init__(self, model, params, masks, x, y):
        self.backend = "numba"
        with backend.use_backend(self.backend):
            shards = parallel.resolve_shards(model, 0, len(x))
            self.trainer = HostTrainer(model, params, masks, shards=shards, **HP)
        self.label = f"numba x{shards}"
        self.x, self.y = x, y


def torch_cuda():
    """torch, where it is importable and sees a GPU; else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


class TorchCudaRunner(TorchRunner):
    """bench.py's TorchRunner moved to `device` (the GPU), each timed call ended by a
    synchronise there."""

    def __init__(self, torch, ref, device: str = "cuda"):
        torch.backends.cudnn.allow_tf32 = False  # float32 products, as the other candidates
        torch.backends.cuda.matmul.allow_tf32 = False
        super().__init__(torch, ref)
        self.cuda = device == "cuda"
        dev = torch.device(device)
        self.net.to(dev)
        self.masks = [(w, m.to(dev)) for w, m in self.masks]
        self.opt = self.optimizer()  # over the moved parameters
        self.x, self.y = self.x.to(dev), self.y.to(dev)
        self.label = f"torch {torch.__version__.split('+')[0]} {device}"

    def train_steps(self, steps):
        super().train_steps(steps)
        if self.cuda:
            self.torch.cuda.synchronize()

    def infer_steps(self, steps):
        super().infer_steps(steps)
        if self.cuda:
            self.torch.cuda.synchronize()


# --- the measurements ---------------------------------------------------------------------------

def throughput(network, model, x, y, steps, rounds, torch=None, q: float = Q) -> list[dict]:
    """One row per regime and candidate: train and inference images/s (median of `rounds`
    interleaved rounds of `steps` steps on the batch (x, y)) and the rate the step reaches."""
    macs = cost(model, None, "freeze", backend.require("numpy"))["total_macs"]  # dense, per image
    rows = []
    for regime, score in REGIMES.items():
        theta0, masks = setup(model, x, y, score, q)
        runners = [DeviceRunner(model, theta0, masks, x, y), HostRunner(model, theta0, masks, x, y)]
        if torch is not None:
            ref = SimpleNamespace(model=model, params=theta0, masks=masks, x=x, y=y)
            runners.append(TorchCudaRunner(torch, ref))
        train = interleaved(runners, "train_steps", steps, rounds, len(x))
        infer = interleaved(runners, "infer_steps", steps, rounds, len(x))
        for r, t, i in zip(runners, train, infer):
            rows.append({"network": network, "regime": regime, "impl": r.label,
                         "train_img_s": t, "infer_img_s": i, "step_macs": macs,
                         "train_tflops": 2 * macs * t / 1e12,
                         "trainable": None if masks is None else int(sum(m.sum() for m in
                                                                         masks.values()))})
    return rows


def host_reference(model, theta0, masks, batches) -> tuple[dict, list[float]]:
    """The NumPy reference: HostTrainer on the numpy backend, one shard, the same steps."""
    with backend.use_backend("numpy"):
        t = HostTrainer(model, theta0, masks, shards=1, **HP)
        losses = [t.step(x, y, LR)[0] for x, y in batches]
        return t.params, losses


def device_steps(model, theta0, masks, batches) -> tuple[dict, list[float]]:
    from minifreeze.cuda_train import DeviceTrainer
    t = DeviceTrainer(model, theta0, masks, **HP)
    losses = [t.step(x, y, LR)[0] for x, y in batches]
    return t.params_to_host(), losses


def agreement(network, model, batches, q: float = Q) -> list[dict]:
    """Per regime: the device's parameters and losses after len(batches) steps against the
    NumPy reference's, its frozen weights against theta0, and a second device run against the
    first (see the module docstring)."""
    rows = []
    for regime, score in REGIMES.items():
        theta0, masks = setup(model, *batches[0], score, q)
        ref, ref_losses = host_reference(model, theta0, masks, batches)
        got, losses = device_steps(model, theta0, masks, batches)
        again, _ = device_steps(model, theta0, masks, batches)
        scale = max(float(np.abs(p).max()) for p in ref.values())
        frozen = [(got[n][m == 0], theta0[n][m == 0]) for n, m in (masks or {}).items()]
        sha = digest(got)
        rows.append({
            "network": network, "regime": regime, "steps": len(batches),
            "param_max_diff_rel": max(float(np.abs(got[n] - ref[n]).max()) for n in ref) / scale,
            "loss_max_diff": float(np.max(np.abs(np.subtract(losses, ref_losses)))),
            "loss_first": float(ref_losses[0]), "loss_last": float(ref_losses[-1]),
            "frozen_weights": int(sum(a.size for a, _ in frozen)),
            "frozen_unchanged": all(a.tobytes() == b.tobytes() for a, b in frozen),
            "deterministic": sha == digest(again), "sha256": sha})
    return rows


def own_gemm_rate(n: int = 2048, repeats: int = 3) -> float:
    """Multiply-adds per second of kernels_cuda.d_matmul on one (n, n) @ (n, n) float32 product on
    the device (the best of `repeats`, after a compiling call)."""
    from numba import cuda

    from minifreeze import kernels_cuda as K
    rng = np.random.default_rng(0)
    a = cuda.to_device(rng.standard_normal((1, n, n), dtype=np.float32))  # (1, n, n)
    b = cuda.to_device(rng.standard_normal((1, n, n), dtype=np.float32))  # (1, n, n)
    c = cuda.device_array((1, n, n), dtype=np.float32)
    K.d_matmul(a, b, c)
    cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        K.d_matmul(a, b, c)
        cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return n ** 3 / best


def torch_gemm_rate(torch, n: int = 4096, repeats: int = 5) -> float:
    """Multiply-adds per second of PyTorch's float32 product (cuBLAS, TF32 off) on the GPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    a @ b
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return n ** 3 / best


# --- tables -------------------------------------------------------------------------------------

def gpu_table(record: dict) -> str:
    """Throughput: per network, regime and candidate, images/s training and inferring, the
    ratios to PyTorch on the same GPU, and the step's float32 rate."""
    rows = record["throughput"]
    torch_of = {(r["network"], r["regime"]): r for r in rows if r["impl"].startswith("torch")}

    def ratio(r, key):
        t = torch_of.get((r["network"], r["regime"]))
        return "" if t is None or r is t else f"{r[key] / t[key]:.2f}x"

    out = [{"network": r["network"], "regime": r["regime"], "candidate": r["impl"],
            "train img/s": f"{r['train_img_s']:,.0f}", "vs torch": ratio(r, "train_img_s"),
            "infer img/s": f"{r['infer_img_s']:,.0f}", "infer vs torch": ratio(r, "infer_img_s"),
            "train TFLOP/s": f"{r['train_tflops']:.2f}"} for r in rows]
    gpu, m = record["environment"].get("gpu") or {}, record["gemm"]
    note = (f"\n\n{gpu.get('name')} (compute capability {gpu.get('compute_capability')}, driver "
            f"{gpu.get('driver')}, numba-cuda {gpu.get('numba_cuda')}) and "
            f"{record['environment']['cpus']} cores of {record['environment']['cpu']}; batch "
            f"{record['batch']}; steps per round "
            + ", ".join(f"{n} {k}" for n, k in record["steps"].items())
            + f"; median of {record['rounds']} rounds. Float32 matrix product (2 x "
            f"multiply-adds): this project's tiled kernel {2 * m['own_gmacs'] / 1e3:.2f} TFLOP/s"
            + (f", PyTorch (cuBLAS, TF32 off) {2 * m['torch_gmacs'] / 1e3:.2f} TFLOP/s"
               if m.get("torch_gmacs") else "") + ".")
    return markdown_table(out, tuple(out[0]), left=("network", "regime", "candidate")) + note


def agreement_table(record: dict) -> str:
    """Agreement: per network and regime, the device against the NumPy reference."""
    out = [{"network": r["network"], "regime": r["regime"], "steps": r["steps"],
            "max param diff / max param": f"{r['param_max_diff_rel']:.1e}",
            "max loss diff": f"{r['loss_max_diff']:.1e}",
            "loss first -> last": f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}",
            "frozen weights unchanged": (f"{'yes' if r['frozen_unchanged'] else 'NO'} "
                                         f"({r['frozen_weights']:,})" if r["frozen_weights"]
                                         else "-"),
            "same twice": "yes" if r["deterministic"] else "NO"} for r in record["agreement"]]
    return markdown_table(out, tuple(out[0]), left=("network", "regime"))


def write_tables(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "gpu.json", (json.dumps(record, indent=2) + "\n").encode())
    write_atomic(out / "gpu.md", (gpu_table(record) + "\n").encode())
    write_atomic(out / "gpu_agreement.md", (agreement_table(record) + "\n").encode())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="LeNet-5 only, fewer steps and rounds")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even where it runs")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    backend.set_backend("cuda")  # BackendUnavailable, saying how, where no GPU is found
    if args.quick:
        args.networks, args.rounds = ["lenet5"], 3
    torch = None if args.no_torch else torch_cuda()
    from minifreeze.lab.environment import environment
    t0 = time.perf_counter()
    record = {"kind": "gpu", "batch": args.batch, "rounds": args.rounds, "q": Q, "lr": LR, **HP,
              "steps": {}, "agreement_steps": {},
              "command": " ".join(["python benchmarks/gpu.py", *(argv or sys.argv[1:])]),
              "gemm": {"own_gmacs": own_gemm_rate() / 1e9,
                       "torch_gmacs": None if torch is None else torch_gemm_rate(torch) / 1e9},
              "torch": None if torch is None else torch.__version__,
              "throughput": [], "agreement": [], "seconds": None,
              "environment": environment(shards=None, backend="cuda")}
    for network in args.networks:  # the record is written after each network: nothing is lost
        name, kwargs, dataset = NETWORKS[network]
        model = get_model(name, **kwargs)
        data = load_dataset(dataset)
        x, y = data.x_train[:args.batch], data.y_train[:args.batch]
        record["throughput"] += throughput(network, model, x, y, STEPS[network], args.rounds,
                                           torch)
        n_agree = 5 if args.quick else AGREE_STEPS[network]
        batches = [(data.x_train[i:i + args.batch], data.y_train[i:i + args.batch])
                   for i in range(0, n_agree * args.batch, args.batch)]
        record["agreement"] += agreement(network, model, batches)
        record["steps"][network], record["agreement_steps"][network] = STEPS[network], n_agree
        record["seconds"] = time.perf_counter() - t0
        write_tables(args.out, record)
        print(gpu_table(record), file=sys.stderr, flush=True)
    print(gpu_table(record))
    print(agreement_table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
