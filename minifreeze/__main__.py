"""Command line: `python -m minifreeze <command> ...`.

    python -m minifreeze info --model lenet5 [--json]
    python -m minifreeze info --backends          # which backends run here, and why not
    python -m minifreeze --backend numpy <command> ...   # any command on a chosen backend
    python -m minifreeze train --model lenet5 --method freezenet --rate 0.995 --epochs 5 --seed 0 \
        --out runs/fz [--limit-train N] [--json]          # writes runs/fz/model.mfz, metrics.json
    python -m minifreeze train ... --epochs auto --budget 180   # epochs that fit 180 seconds
    python -m minifreeze evaluate runs/fz/model.mfz [--json]
    python -m minifreeze inspect runs/fz/model.mfz [--json]
    python -m minifreeze report runs/mnist              # table, plot and results.json of the runs

Errors in the input (an unknown model, a bad option) print one line on stderr and exit with
status 2; library code itself never prints or exits.
"""

from __future__ import annotations

import argparse
import json
import sys

from minifreeze import backend, models


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape such as 3x32x32, got {text!r}")
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected a shape such as 3x32x32, got {text!r}")
    return shape


def build_model(args) -> models.Model:
    kwargs = {}
    if getattr(args, "input_shape", None) is not None:
        if args.model not in ("vgg", "vgg_d"):
            raise CLIError(f"--input-shape applies to vgg and vgg_d only, not {args.model}")
        kwargs["input_shape"] = args.input_shape
    if getattr(args, "batch_norm", False):
        if args.model != "vgg":
            raise CLIError(f"--batch-norm applies to vgg only, not {args.model}")
        kwargs["batch_norm"] = True
    try:
        return models.get_model(args.model, **kwargs)
    except ValueError as err:
        raise CLIError(str(err)) from None


def add_model_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, choices=sorted(models.MODELS),
                   help="architecture")
    p.add_argument("--input-shape", type=_parse_shape, default=None, metavar="CxHxW",
                   help="input shape for vgg: 3x32x32 (default) or 1x28x28")
    p.add_argument("--batch-norm", action="store_true", help="vgg with batch norm")


def add_backend_argument(p: argparse.ArgumentParser, top_level: bool = False) -> None:
    """--backend NAME; on a subcommand it overrides the top-level one only when given."""
    p.add_argument("--backend", choices=backend.NAMES, default=None if top_level else
                   argparse.SUPPRESS, help="kernels to run on (default: MINIFREEZE_BACKEND, "
                   "else the first available of " + ", ".join(backend.NAMES) + ")")


def apply_backend(args) -> None:
    """Switch to args.backend, if one was asked for; an unavailable one is a CLIError."""
    name = getattr(args, "backend", None)
    try:
        if name is None:
            backend.get_backend()  # MINIFREEZE_BACKEND or the default: fail here, clearly
        else:
            backend.set_backend(name)
    except backend.BackendUnavailable as err:
        raise CLIError(f"backend {name or backend.default_backend()!r} is not available: "
                       f"{err}") from None
    except ValueError as err:
        raise CLIError(f"{err} (from MINIFREEZE_BACKEND)") from None


def cmd_backends(args) -> int:
    status = backend.available_backends()
    active = backend.get_backend() if any(v is None for v in status.values()) else None
    if args.json:
        print(json.dumps({"active": active, "backends": {
            k: {"available": v is None, "reason": v} for k, v in status.items()}}, indent=2))
        return 0
    for name, reason in status.items():
        mark = "*" if name == active else " "
        print(f"{mark} {name:<8} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def cmd_info(args) -> int:
    if args.backends:
        return cmd_backends(args)
    if args.model is None:
        raise CLIError("info needs --model NAME or --backends")
    model = build_model(args)
    rows = model.summary()
    total = model.num_params()
    if args.json:
        print(json.dumps({"model": model.name, "input_shape": list(model.input_shape),
                          "layers": rows, "total_params": total}, indent=2))
        return 0
    print(f"{model.name}: input {'x'.join(map(str, model.input_shape))}")
    print(f"{'layer':<12} {'op':<10} {'output shape':<16} {'params':>12}")
    for r in rows:
        shape = "x".join(map(str, r["output_shape"]))
        print(f"{r['name']:<12} {r['op']:<10} {shape:<16} {r['params']:>12,}")
    print(f"{'total':<40} {total:>12,}")
    return 0


# --- the FreezeNet pipeline: train, evaluate, inspect, report ------------------------------------

def _library_call(fn, *args, **kwargs):
    """Run a library function; its documented errors become one-line CLI errors."""
    from minifreeze.data import DataError
    from minifreeze.storage import StorageError
    from minifreeze.train import TrainingDiverged
    try:
        return fn(*args, **kwargs)
    except (DataError, StorageError, TrainingDiverged, ValueError, NotImplementedError,
            backend.BackendUnavailable) as err:  # NotImplementedError: batch norm on cuda
        raise CLIError(str(err)) from None


def _epochs(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _write_json(path, obj) -> None:
    """JSON written atomically (storage.write_atomic: temporary file, then rename)."""
    from minifreeze.storage import write_atomic
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _load_data(name: str, download: bool, limit: int | None, val_fraction: float, seed: int):
    from minifreeze import data as D
    ds = _library_call(D.load_dataset, name, download=download)
    ds = _library_call(D.split_validation, ds, val_fraction, seed)
    return _library_call(D.limit_train, ds, limit)


def cmd_train(args) -> int:
    import dataclasses
    import time
    from pathlib import Path
    from minifreeze import backend, masks, storage, train as T
    if args.epochs == "auto" and args.budget is None:
        raise CLIError("--epochs auto needs --budget SECONDS")
    if args.budget is not None and args.epochs != "auto":
        raise CLIError("--budget applies only with --epochs auto")
    model = build_model(args)
    model_kwargs = {}
    if args.input_shape is not None:
        model_kwargs["input_shape"] = list(args.input_shape)
    if args.batch_norm:
        model_kwargs["batch_norm"] = True
    config = T.TrainConfig(
        model=model.name, method=args.method, rate=args.rate, score=args.score, mode=args.mode,
        scope=args.scope, include_biases=args.score_biases, init=args.init, seed=args.seed,
        epochs=1, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        nesterov=args.nesterov, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup_steps=args.warmup_steps, saliency_batch=args.saliency_batch,
        threads=args.threads, model_kwargs=model_kwargs)
    config = _library_call(config.resolved)
    t0 = time.perf_counter()
    ds = _load_data(args.dataset, args.download, args.limit_train, args.val_fraction, args.seed)
    plan = None
    if args.epochs == "auto":
        plan = _library_call(T.plan_epochs, config, ds, args.budget - (time.perf_counter() - t0))
        config = dataclasses.replace(config, epochs=plan["epochs"])
    else:
        config = dataclasses.replace(config, epochs=args.epochs)
    result = _library_call(T.train, config, ds, progress=True if args.progress else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = result.checkpoint()
    ckpt.meta["dataset"] = args.dataset
    file_bytes = storage.save(out / "model.mfz", ckpt)
    shapes = result.model.param_shapes()
    total = result.model.num_params()
    trained = masks.count_trained(shapes, result.masks)
    metrics = {
        "model": config.model, "method": config.method, "score": config.score,
        "mode": config.mode, "rate": config.rate, "seed": config.seed, "init": config.init,
        "dataset": args.dataset, "backend": backend.get_backend(), "epochs": config.epochs,
        "test_accuracy": result.history[-1]["test_accuracy"],
        "total_params": total, "trained_params": trained, "compression": total / trained,
        "file_bytes": file_bytes, "dense_bytes": 4 * total,
        "wall_seconds": time.perf_counter() - t0, "plan": plan,
        "config": dataclasses.asdict(config), "history": result.history,
        "density": masks.density_report(result.model, result.masks),
    }
    _write_json(out / "metrics.json", metrics)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("history", "density")},
                         indent=2))
    else:
        print(f"{config.method} {config.model} rate {config.rate}: test accuracy "
              f"{metrics['test_accuracy']:.4f} after {config.epochs} epochs, "
              f"{trained:,} of {total:,} parameters trained (compression "
              f"{metrics['compression']:.1f}), {file_bytes:,} bytes on disk vs "
              f"{4 * total:,} dense, {metrics['wall_seconds']:.0f} s -> {out / 'model.mfz'}")
    return 0


def cmd_evaluate(args) -> int:
    from minifreeze import storage, train as T
    ckpt = _library_call(storage.load, args.path)
    dataset = args.dataset or ckpt.meta.get("dataset", "mnist")
    ds = _load_data(dataset, args.download, None, 0.0, 0)
    model = ckpt.model()
    acc, loss = _library_call(T.evaluate, model, ckpt.params, ds.x_test, ds.y_test,
                              buffers=ckpt.buffers or None)
    row = {"path": str(args.path), "model": model.name, "method": ckpt.meta.get("method"),
           "rate": ckpt.meta.get("rate"), "dataset": dataset, "test_accuracy": acc,
           "test_loss": loss, "test_examples": int(len(ds.y_test))}
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(f"{args.path}: {model.name} {row['method']} rate {row['rate']}: test accuracy "
              f"{acc:.4f} (loss {loss:.4f}) on {len(ds.y_test):,} {dataset} test images")
    return 0


def cmd_inspect(args) -> int:
    from minifreeze import storage
    info = _library_call(storage.describe, args.path)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.path}: .mfz v{storage.FORMAT_VERSION}, model {info['model']}, method "
          f"{info.get('method')}, mode {info['mode']}, rate {info.get('rate')}, init "
          f"{info['init']}, seed {info['seed']}, library {info['library_version']}")
    print(f"{'tensor':<20} {'shape':<14} {'kind':<7} {'mask':<7} {'trained':>9} {'total':>9} "
          f"{'mask B':>8} {'value B':>9} {'dense B':>9}")
    for r in info["tensors"]:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['name']:<20} {shape:<14} {r['kind']:<7} {r['encoding']:<7} {r['trained']:>9,} "
              f"{r['total']:>9,} {r['mask_bytes']:>8,} {r['value_bytes']:>9,} "
              f"{r['dense_bytes']:>9,}")
    print(f"header {info['header_bytes']:,} B + masks {info['mask_bytes']:,} B + values "
          f"{info['value_bytes']:,} B + checksum {info['checksum_bytes']} B = "
          f"{info['file_bytes']:,} B on disk; dense float32 {info['dense_bytes']:,} B "
          f"({info['dense_bytes'] / info['file_bytes']:.1f}x smaller)")
    return 0


def cmd_report(args) -> int:
    """Collect DIR/*/metrics.json into a table, DIR/accuracy.png and DIR/results.json."""
    from pathlib import Path
    root = Path(args.dir)
    runs = []
    for path in sorted(root.glob("*/metrics.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise CLIError(f"{path}: unreadable metrics ({err})") from None
    if not runs:
        raise CLIError(f"{root}: no */metrics.json found (run `train --out {root}/NAME` first)")
    order = {"dense": 0, "freezenet": 1, "snip": 2}
    runs.sort(key=lambda r: (order.get(r["method"], 9), r["rate"]))
    keys = ("method", "rate", "test_accuracy", "trained_params", "compression", "file_bytes",
            "epochs", "wall_seconds", "backend")
    summary = [{k: r[k] for k in keys} for r in runs]
    _write_json(root / "results.json", {"runs": summary,
                                        "history": {r["method"]: r["history"] for r in runs}})
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        ax.plot([h["epoch"] for h in r["history"]], [100 * h["test_accuracy"] for h in r["history"]],
                marker="o", label=f"{r['method']} (rate {r['rate']})")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{runs[0]['model']} on {runs[0]['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(root / "accuracy.png", dpi=120)
    plt.close(fig)
    print(f"| method | rate | test accuracy | trained params | compression | file bytes | epochs "
          f"| seconds | backend |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for s in summary:
        print(f"| {s['method']} | {s['rate']} | {100 * s['test_accuracy']:.2f}% | "
              f"{s['trained_params']:,} | {s['compression']:.1f} | {s['file_bytes']:,} | "
              f"{s['epochs']} | {s['wall_seconds']:.0f} | {s['backend']} |")
    print(f"wrote {root / 'results.json'} and {root / 'accuracy.png'}")
    return 0


def add_pipeline_commands(sub) -> None:
    from minifreeze import data, init, masks, optim, saliency, train as T
    p = sub.add_parser("train", help="train dense, FreezeNet or SNIP; write model.mfz and "
                                     "metrics.json")
    add_model_arguments(p)
    add_backend_argument(p)
    p.add_argument("--method", required=True, choices=sorted(T.METHODS),
                   help="dense, freezenet (grad + freeze) or snip (snip + prune)")
    p.add_argument("--rate", type=float, default=0.995,
                   help="rate q = 1 - density: share of weights frozen or pruned (default 0.995)")
    p.add_argument("--score", choices=saliency.SCORES, default=None,
                   help="override the method's saliency score")
    p.add_argument("--mode", choices=masks.MODES, default=None,
                   help="override the method's mode: freeze (keep theta0) or prune (set to 0)")
    p.add_argument("--scope", choices=masks.SCOPES, default="global",
                   help="top-k over all weights (global) or per layer")
    p.add_argument("--score-biases", action="store_true",
                   help="score and mask the biases too (default: biases always train)")
    p.add_argument("--init", choices=init.SCHEMES, default="xavier", help="initialisation scheme")
    p.add_argument("--seed", type=int, default=0, help="32-bit seed: init, saliency batch, "
                                                       "shuffling")
    p.add_argument("--epochs", type=_epochs, default=5, help="epochs, or 'auto' with --budget")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="with --epochs auto: time a few steps, then fit the epochs to this budget")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default by method: {T.DEFAULT_LR})")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", choices=optim.SCHEDULES, default="cosine")
    p.add_argument("--warmup-steps", type=int, default=200,
                   help="linear learning-rate warm-up over the first N steps (0: none)")
    p.add_argument("--saliency-batch", type=int, default=100,
                   help="training images in the one saliency batch")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="cut each batch into N shards trained on N threads (default 0: one per "
                        "CPU; models with batch norm use 1)")
    p.add_argument("--dataset", choices=data.DATASETS, default="mnist")
    p.add_argument("--download", action="store_true",
                   help="fetch fashion-mnist or cifar10 (pinned checksums) if missing")
    p.add_argument("--limit-train", type=int, default=None, metavar="N",
                   help="train on the first N training images only")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out this share of the training set for validation (SNIP: 0.1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_train)

    for name, func, text in (("evaluate", cmd_evaluate, "test accuracy of a saved .mfz model"),
                             ("inspect", cmd_inspect, "what an .mfz file holds, tensor by tensor")):
        p = sub.add_parser(name, help=text)
        p.add_argument("path", help="an .mfz file")
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "evaluate":
            add_backend_argument(p)
            p.add_argument("--dataset", choices=data.DATASETS, default=None,
                           help="default: the dataset recorded in the file")
            p.add_argument("--download", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("report", help="table, accuracy plot and results.json of DIR/*/metrics.json")
    p.add_argument("dir", help="folder holding one sub-folder per run")
    p.set_defaults(func=cmd_report)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump), exit status 2."""

    def error(self, message):
        self.exit(2, f"minifreeze: error: {self.prog}: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m minifreeze",
                                     description="FreezeNet and SNIP in NumPy.")
    add_backend_argument(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="layer output shapes and parameter counts of a model, "
                                    "or the available backends")
    add_model_arguments(p, required=False)
    add_backend_argument(p)
    p.add_argument("--backends", action="store_true",
                   help="list the backends, the active one starred, and why any cannot run")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)
    add_pipeline_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        apply_backend(args)
        return args.func(args)
    except CLIError as err:
        print(f"minifreeze: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
