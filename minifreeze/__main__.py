"""Command line: `python -m minifreeze <command> ...`.

    python -m minifreeze info --model lenet5 [--json]
    python -m minifreeze info --backends          # which backends run here, and why not
    python -m minifreeze --backend numpy <command> ...   # any command on a chosen backend
    python -m minifreeze train --model lenet5 --method freezenet --rate 0.995 --epochs 5 --seed 0 \
        --out runs/fz [--limit-train N] [--json]          # writes runs/fz/model.mfz, metrics.json
    python -m minifreeze train ... --epochs auto --budget 180   # epochs that fit 180 seconds
    python -m minifreeze train ... --shards 1                   # one shard: one thread per batch
    python -m minifreeze evaluate runs/fz/model.mfz [--json]
    python -m minifreeze inspect runs/fz/model.mfz [--json]
    python -m minifreeze report runs/mnist              # table, plot and results.json of the runs

Errors in the input (an unknown model, a bad option, a damaged file, an output folder that cannot
be written) print one line on stderr and exit with status 2; a run that fails while it trains
(the loss diverged) prints one line and exits with status 1, after writing what it can (see
`train`). Library code itself never prints or exits. Option defaults are `TrainConfig`'s own.
"""

from __future__ import annotations

import argparse
import json
import sys

from minifreeze import backend, models


class CLIError(Exception):
    """A user-facing error: printed as one line; exit status 2 (bad input) unless `status` says
    otherwise (1: the work itself failed, e.g. training diverged)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


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
    from minifreeze.report import ReportError
    from minifreeze.storage import StorageError
    try:
        return fn(*args, **kwargs)
    except (DataError, StorageError, ReportError, ValueError, NotImplementedError,
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


def _writable_folder(path) -> "Path":
    """Create `path` if needed and check that a file can be written there, before any work."""
    import tempfile
    from pathlib import Path
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise CLIError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    return out


def train_config(args):
    """The TrainConfig the train command's arguments describe (resolved and checked)."""
    from minifreeze.train import TrainConfig
    model = build_model(args)
    model_kwargs = {}
    if args.input_shape is not None:
        model_kwargs["input_shape"] = list(args.input_shape)
    if args.batch_norm:
        model_kwargs["batch_norm"] = True
    config = TrainConfig(
        model=model.name, method=args.method, rate=args.rate, score=args.score, mode=args.mode,
        scope=args.scope, include_biases=args.include_biases, init=args.init, seed=args.seed,
        batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
        weight_decay=args.weight_decay, schedule=args.schedule, warmup_steps=args.warmup_steps,
        saliency_batch=args.saliency_batch, eval_batch=args.eval_batch, shards=args.shards,
        model_kwargs=model_kwargs)
    return _library_call(config.resolved)


def cmd_train(args) -> int:
    import dataclasses
    import time
    from minifreeze import parallel, report, storage, train as T
    if args.epochs == "auto" and args.budget is None:
        raise CLIError("--epochs auto needs --budget SECONDS")
    if args.budget is not None and args.epochs != "auto":
        raise CLIError("--budget applies only with --epochs auto")
    config = train_config(args)
    out = _writable_folder(args.out)
    t0 = time.perf_counter()
    ds = _load_data(args.dataset, args.download, args.limit_train, args.val_fraction, args.seed)
    plan = None
    with parallel.kept_freed_memory():  # the process is ours: keep malloc's freed blocks
        if args.epochs == "auto":
            plan = _library_call(T.plan_epochs, config, ds, args.budget - (time.perf_counter() - t0))
            config = dataclasses.replace(config, epochs=plan["epochs"])
        else:
            config = dataclasses.replace(config, epochs=args.epochs)
        try:
            result = _library_call(T.train, config, ds, progress=True if args.progress else None)
        except T.TrainingDiverged as err:
            _save_diverged(out, config, args.dataset, err)
            raise CLIError(f"{err}; wrote {out / 'last_good.mfz'} and {out / 'metrics.json'}",
                           status=1) from None
    ckpt = result.checkpoint()
    ckpt.meta["dataset"] = args.dataset
    file_bytes = storage.save(out / "model.mfz", ckpt)
    metrics = report.run_metrics(result, dataset=args.dataset, file_bytes=file_bytes,
                                 wall_seconds=time.perf_counter() - t0,
                                 backend=backend.get_backend(), plan=plan)
    _write_json(out / "metrics.json", metrics)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("history", "density")},
                         indent=2))
    else:
        print(f"{config.method} {config.model} rate {config.rate}: test accuracy "
              f"{metrics['test_accuracy']:.4f} after {config.epochs} epochs, "
              f"{metrics['trained_params']:,} of {metrics['total_params']:,} parameters trained "
              f"(compression {metrics['compression']:.1f}), {file_bytes:,} bytes on disk vs "
              f"{metrics['dense_bytes']:,} dense, {metrics['wall_seconds']:.0f} s -> "
              f"{out / 'model.mfz'}")
    return 0


def _save_diverged(out, config, dataset: str, err) -> None:
    """A diverged run leaves the last parameters whose loss was finite and says where it broke
    (metrics.json has no test_accuracy, so `report` and a sweep never count it as finished)."""
    import dataclasses
    import math
    from minifreeze import storage
    storage.save(out / "last_good.mfz", storage.Checkpoint(
        config.model, err.params, err.masks or {}, err.buffers, config.seed, config.init,
        config.mode, {"method": config.method, "score": config.score, "rate": config.rate,
                      "dataset": dataset}, dict(config.model_kwargs)))
    loss = err.loss if math.isfinite(err.loss) else str(err.loss)  # JSON has no NaN
    _write_json(out / "metrics.json", {
        "model": config.model, "method": config.method, "rate": config.rate,
        "seed": config.seed, "dataset": dataset,
        "diverged": {"epoch": err.epoch, "step": err.step, "loss": loss, "why": err.why},
        "config": dataclasses.asdict(config), "history": err.history})


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
    from minifreeze import report
    root = Path(args.dir)
    runs = _library_call(report.load_runs, root)
    summary = report.summary_rows(runs)
    _write_json(root / "results.json", {"runs": summary,
                                        "history": {r["method"]: r["history"] for r in runs}})
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.close(report.plot_history(runs, root / "accuracy.png"))
    print(report.markdown_table(summary))
    print(f"wrote {root / 'results.json'} and {root / 'accuracy.png'}")
    return 0


def add_pipeline_commands(sub) -> None:
    from minifreeze import data, init, masks, optim, saliency, train as T
    d = T.TrainConfig()  # every default below is the config's own
    p = sub.add_parser("train", help="train dense, FreezeNet or SNIP; write model.mfz and "
                                     "metrics.json")
    add_model_arguments(p)
    add_backend_argument(p)
    p.add_argument("--method", required=True, choices=sorted(T.METHODS),
                   help="dense, freezenet (grad + freeze) or snip (snip + prune)")
    p.add_argument("--rate", type=float, default=d.rate,
                   help=f"rate q = 1 - density: share of weights frozen or pruned (default {d.rate})")
    p.add_argument("--score", choices=saliency.SCORES, default=d.score,
                   help="override the method's saliency score")
    p.add_argument("--mode", choices=masks.MODES, default=d.mode,
                   help="override the method's mode: freeze (keep theta0) or prune (set to 0)")
    p.add_argument("--scope", choices=masks.SCOPES, default=d.scope,
                   help="top-k over all weights (global) or per layer")
    p.add_argument("--include-biases", action="store_true", default=d.include_biases,
                   help="score and mask the biases too (default: biases always train)")
    p.add_argument("--init", choices=init.SCHEMES, default=d.init, help="initialisation scheme")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="32-bit seed: init, saliency batch, shuffling")
    p.add_argument("--epochs", type=_epochs, default=d.epochs,
                   help="epochs, or 'auto' with --budget")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="with --epochs auto: time a few steps, then fit the epochs to this budget")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr,
                   help=f"peak learning rate (default by method: {T.DEFAULT_LR})")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--nesterov", action="store_true", default=d.nesterov)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=optim.SCHEDULES, default=d.schedule)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="linear learning-rate warm-up over the first N steps (0: none)")
    p.add_argument("--saliency-batch", type=int, default=d.saliency_batch,
                   help="training images in the one saliency batch")
    p.add_argument("--eval-batch", type=int, default=d.eval_batch,
                   help="test images per forward pass when evaluating")
    p.add_argument("--shards", type=int, default=d.shards, metavar="N",
                   help="cut each batch into N shards trained on N threads (default: one per "
                        "CPU for models with convolutions; batch norm runs as 1)")
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
        return err.status


if __name__ == "__main__":
    sys.exit(main())
