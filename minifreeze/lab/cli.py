"""Command line: `python -m minifreeze <command> ...`.

    python -m minifreeze info --model lenet5 [--json]
    python -m minifreeze info --backends          # which backends run here, and why not
    python -m minifreeze --backend numpy <command> ...   # any command on a chosen backend
    python -m minifreeze train --model lenet5 --method freezenet --rate 0.995 --epochs 5 --seed 0 \
        --out runs/fz [--limit-train N] [--json]          # writes runs/fz/model.mfz, metrics.json
    python -m minifreeze train ... --protocol paper             # FreezeNet's supplement, 250 epochs
    python -m minifreeze train ... --epochs auto --budget 180   # epochs that fit 180 seconds
    python -m minifreeze sweep --models lenet5 --methods freezenet snip --rates 0.99 0.995 \
        --seeds 0 1 2 --out runs/study [--executor dask [--scheduler tcp://HOST:8786]]
    python -m minifreeze evaluate runs/fz/model.mfz [--json]
    python -m minifreeze inspect runs/fz/model.mfz [--json]
    python -m minifreeze report runs/study             # tables (md, csv, json) and figures

Errors in the input (an unknown model, a bad option, a damaged file, an output folder that cannot
be written) print one line on stderr and exit with status 2; a run that fails while it trains
(the loss diverged) prints one line and exits with status 1, after writing what it can (see
`train`). Library code itself never prints or exits. Every `TrainConfig` field is a flag of the
same name; a flag not given takes the value of `--protocol` (short: `TrainConfig`'s defaults).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minifreeze import backend, methods, models


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


def model_kwargs(args) -> dict:
    """The model builder's keyword arguments the flags give (--input-shape, --batch-norm,
    --conv-relu, --conv): built once, for the model and the config alike. With one --model each
    is checked against it; a sweep's (--models) are applied per model by `sweep.expand_grid`."""
    model = getattr(args, "model", None)
    kwargs = {}
    if getattr(args, "input_shape", None) is not None:
        if model is not None and model not in ("vgg", "vgg_d"):
            raise CLIError(f"--input-shape applies to vgg and vgg_d only, not {model}")
        kwargs["input_shape"] = list(args.input_shape)
    if getattr(args, "batch_norm", False):
        if model is not None and model != "vgg":
            raise CLIError(f"--batch-norm applies to vgg only, not {model}")
        kwargs["batch_norm"] = True
    if getattr(args, "conv_relu", False):
        if model is not None and model != "lenet5":
            raise CLIError(f"--conv-relu applies to lenet5 only, not {model}")
        kwargs["conv_relu"] = True
    if getattr(args, "conv", None) == "winograd":
        kwargs["conv"] = "winograd"
    return kwargs


def build_model(args) -> models.Model:
    try:
        return models.get_model(args.model, **model_kwargs(args))
    except ValueError as err:
        raise CLIError(str(err)) from None


def add_model_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, choices=sorted(models.MODELS),
                   help="architecture")
    p.add_argument("--input-shape", type=_parse_shape, default=None, metavar="CxHxW",
                   help="input shape for vgg: 3x32x32 (default) or 1x28x28")
    p.add_argument("--batch-norm", action="store_true", help="vgg with batch norm")
    add_conv_relu_argument(p)
    add_conv_argument(p)


def add_conv_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conv", choices=models.CONV_ALGOS, default=None,
                   help="how vgg and vgg_d compute their 3x3 convolutions: im2col (the default, "
                        "the rounding of every committed result) or winograd (F(2x2, 3x3): fewer "
                        "multiplications, rounding a little differently; recorded in the run)")


def add_conv_relu_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conv-relu", action="store_true",
                   help="lenet5 with a ReLU after each convolution (the network the PyTorch "
                        "ports train at lr 0.1; Caffe's and SNIP's have none; recorded as "
                        "network lenet5_relu)")


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


# --- the FreezeNet pipeline: train, sweep, evaluate, inspect, report ----------------------------

def _library_call(fn, *args, **kwargs):
    """Run a library function; its documented errors become one-line CLI errors."""
    from minifreeze.data import DataError
    from minifreeze.lab.results import ReportError
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


def _state_every(text: str) -> int:
    from minifreeze.train import check_state_every
    try:
        value = int(text)
        check_state_every(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of epochs >= 1, got {text!r}")
    return value


def add_state_argument(p) -> None:
    from minifreeze.lab.runs import STATE_EVERY
    p.add_argument("--state-every", type=_state_every, default=STATE_EVERY, metavar="N",
                   help="save each run's training state (OUT/state.npz, to resume from) every N "
                        "epochs; it changes nothing in the result (default %(default)s; 1 for "
                        "runs whose epochs are long)")


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


# Every TrainConfig field is a flag of the same name, and so is every option of every method.
# Flags the user does not give take the protocol's value (--protocol short: TrainConfig's own
# defaults), so a flag's default is shown in its help text, not stored in argparse. What a flag
# means is the field's own metadata (`methods.documented`): no table here to keep in step.

def add_config_arguments(p: argparse.ArgumentParser, skip=()) -> None:
    """One flag per TrainConfig field (but `skip` and model_kwargs) and per method option (flat,
    in `options`' place), from each field's metadata, plus --protocol."""
    import dataclasses
    from minifreeze import train as T
    p.add_argument("--protocol", choices=sorted(T.PROTOCOLS), default="short",
                   help="a named preset of the training fields (short: the defaults below; "
                        "paper: FreezeNet's supplement, 250 epochs); any flag overrides it")
    fields = []
    for f in dataclasses.fields(T.TrainConfig):
        fields += list(methods.option_fields().items()) if f.name == "options" else [(f.name, f)]
    for name, f in fields:
        if name in skip or name == "model_kwargs":
            continue
        default, meta = f.default, dict(f.metadata)
        if "help" not in meta:
            raise TypeError(f"{name}: a config field or method option without help; declare it "
                            f"with methods.documented(default, help)")
        paper = T.PROTOCOLS["paper"].get(name, default)
        kw = dict(default=argparse.SUPPRESS, help=f"{meta.pop('help')} (default {default}"
                  + (f"; --protocol paper: {paper})" if paper != default else ")"))
        if callable(meta.get("choices")):
            meta["choices"] = meta["choices"]()
        if isinstance(default, bool):
            kw["action"] = "store_true"
        elif name == "epochs":
            kw["type"] = _epochs  # the command line's own 'auto' (with --budget)
        elif "choices" not in meta and "type" not in meta:
            kw["type"] = type(default)
        p.add_argument("--" + name.replace("_", "-"), **kw, **meta)


def config_from_args(args, *, resolve: bool = True, **fixed):
    """The TrainConfig the flags describe: the protocol's values, overridden by the flags given
    and by `fixed`; resolved and checked (a bad value is a CLIError), unless `resolve` is False
    (a sweep's base: each method resolves it for itself, keeping the fields it uses)."""
    import dataclasses
    from minifreeze import train as T
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(T.TrainConfig)
             if hasattr(args, f.name) and f.name not in fixed}
    options = {k: getattr(args, k) for k in methods.option_defaults() if hasattr(args, k)}
    kwargs = model_kwargs(args)
    if "method" in fixed:  # one method: its options from the flags it has
        given["options"] = _library_call(lambda: methods.get(fixed["method"]).options_from(options))
    elif options:  # a sweep's base: each method takes the flags it has (sweep.expand_grid)
        given["options"] = options
    config = _library_call(lambda: T.protocol_config(args.protocol, **given, **fixed,
                                                     model_kwargs=kwargs))
    return _library_call(config.resolved) if resolve else config


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    from minifreeze import data
    p.add_argument("--dataset", choices=data.DATASETS, default="mnist")
    p.add_argument("--download", action="store_true",
                   help="fetch fashion-mnist or cifar10 (pinned checksums) if missing")
    p.add_argument("--limit-train", type=int, default=None, metavar="N",
                   help="train on the first N training images only")
    p.add_argument("--limit-test", type=int, default=None, metavar="N",
                   help="test on the first N test images only")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out this share of the training set for validation (SNIP: 0.1)")


def _spec(args, config):
    from minifreeze.lab.runs import RunSpec
    return RunSpec(config, args.dataset, args.limit_train, args.limit_test, args.val_fraction)


def _load(spec, download: bool):
    from minifreeze.lab import runs
    return _library_call(runs.load_data, spec, download=download)


def cmd_train(args) -> int:
    import dataclasses
    import time
    from minifreeze import parallel, train as T
    from minifreeze.lab import runs
    epochs = getattr(args, "epochs", None)
    if epochs == "auto" and args.budget is None:
        raise CLIError("--epochs auto needs --budget SECONDS")
    if args.budget is not None and epochs != "auto":
        raise CLIError("--budget applies only with --epochs auto")
    fixed = {"model": args.model, "method": args.method}
    if epochs == "auto":
        fixed["epochs"] = 1  # replaced by the plan below
    config = config_from_args(args, **fixed)
    out = _writable_folder(args.out)
    t0 = time.perf_counter()
    spec = _spec(args, config)
    ds = _load(spec, args.download)
    plan = None
    with parallel.kept_freed_memory():  # the process is ours: keep malloc's freed blocks
        if epochs == "auto":
            plan = _library_call(T.plan_epochs, config, ds, args.budget - (time.perf_counter() - t0))
            spec = dataclasses.replace(spec, config=dataclasses.replace(config,
                                                                        epochs=plan["epochs"]))
        metrics = _library_call(runs.run, spec, out, data=ds,
                                progress=True if args.progress else None, plan=plan,
                                state_every=args.state_every)
    if "diverged" in metrics:
        d = metrics["diverged"]
        raise CLIError(f"{d['why']} at epoch {d['epoch']}, step {d['step']}: training diverged "
                       f"(try a smaller learning rate); wrote {out / 'last_good.mfz'} and "
                       f"{out / 'metrics.json'}", status=1)
    c = spec.config
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("history", "density")},
                         indent=2))
    else:
        print(f"{c.method} {c.model} rate {c.rate}: test accuracy "
              f"{metrics['test_accuracy']:.4f} after {c.epochs} epochs, "
              f"{metrics['trained_params']:,} of {metrics['total_params']:,} parameters trained "
              f"(compression {metrics['compression']:.1f}), {metrics['file_bytes']:,} bytes on "
              f"disk vs {metrics['dense_bytes']:,} dense, {metrics['wall_seconds']:.0f} s -> "
              f"{out / 'model.mfz'}")
    return 0


def cmd_sweep(args) -> int:
    from minifreeze.lab import sweep
    from minifreeze.lab.sweep import SweepError
    fixed = {} if hasattr(args, "shards") else {"shards": 1}  # one shard per run by default
    base = config_from_args(args, resolve=False, **fixed)
    try:
        specs = sweep.expand_grid(args.models, args.methods, args.rates or [], args.seeds,
                                  base=base, dataset=args.dataset, limit_train=args.limit_train,
                                  limit_test=args.limit_test, val_fraction=args.val_fraction,
                                  order=args.order)
    except SweepError as err:
        raise CLIError(str(err)) from None
    out = _writable_folder(args.out)
    _load(specs[0], args.download)  # the data are there and verified before any run starts
    try:
        with sweep.make_executor(args.executor, args.workers, args.scheduler) as ex:
            result = sweep.sweep(specs, out, ex, progress=True if args.progress else None,
                                 state_every=args.state_every)
    except SweepError as err:
        raise CLIError(str(err)) from None
    per_hour = 3600 * result.ran / result.seconds if result.ran else 0.0
    summary = {"runs": len(specs), "already_finished": result.skipped, "ran": result.ran,
               "failed": result.failed, "seconds": result.seconds, "runs_per_hour": per_hour,
               "executor": args.executor, "out": str(out)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{len(specs)} runs in {out}: {result.skipped} already finished, {result.ran} ran "
              f"in {result.seconds:.0f} s ({per_hour:.1f} runs per hour, executor "
              f"{args.executor}), {len(result.failed)} failed")
        for name, why in result.failed.items():
            print(f"  failed: {name}: {why}")
        print(f"table and figures: python -m minifreeze report {out}")
    if result.failed:
        raise CLIError(f"{len(result.failed)} of {len(specs)} runs failed (listed above); "
                       f"run the same command again to retry them", status=1)
    return 0


def cmd_evaluate(args) -> int:
    from minifreeze import data as D, storage, train as T
    ckpt = _library_call(storage.load, args.path)
    dataset = args.dataset or ckpt.meta.get("dataset", "mnist")
    ds = _library_call(D.load_dataset, dataset, download=args.download)
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
    from minifreeze.models import network_name
    net = network_name(info["model"], info.get("model_kwargs"))
    print(f"{args.path}: .mfz v{storage.FORMAT_VERSION}, model {net}, method "
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
    if info.get("levels"):
        from minifreeze import elsa
        rows = elsa.level_rows(storage.load(args.path))
        print(f"ELSA levels (extract one with: python -m minifreeze extract {args.path} "
              f"--rate Q --out FILE):")
        print(f"{'level':>5} {'rate':>7} {'weights kept':>13} {'joined B':>9} {'own mask B':>11} "
              f"{'extracted B':>12}")
        for r in rows:
            print(f"{r['level']:>5} {r['rate']:>7} {r['kept_weights']:>13,} {r['joined_bytes']:>9,} "
                  f"{r['own_mask_bytes']:>11,} {r['extracted_bytes']:>12,}")
        print(f"the level map takes {info['mask_bytes']:,} B in this file (per tensor the smaller "
              f"of nested and packed); one mask per sparse level would take "
              f"{sum(r['own_mask_bytes'] for r in rows):,} B")
    return 0


def cmd_extract(args) -> int:
    """One level of an ELSA file as an ordinary pruned .mfz."""
    from minifreeze import storage
    ckpt = _library_call(storage.load, args.path)
    from minifreeze import elsa
    small = _library_call(elsa.extract_level, ckpt, args.rate)
    out = _writable_folder(Path(args.out).parent or ".") / Path(args.out).name
    size = _library_call(storage.save, out, small)
    kept = sum(int(m.sum()) for m in small.masks.values()) if small.masks else None
    print(f"{args.path}: level {small.meta['elsa_level']} (rate {small.meta['rate']}"
          f"{f', {kept:,} weights kept' if kept is not None else ', dense'}) -> {out}, "
          f"{size:,} bytes")
    return 0


def cmd_report(args) -> int:
    """DIR/*/metrics.json -> tables (Markdown, CSV, JSON) and figures in DIR; prints the tables."""
    from pathlib import Path
    from minifreeze.lab import pages, results
    import matplotlib
    matplotlib.use("Agg")  # files only: never open a window
    root = Path(args.dir)
    if args.page and not any(root.glob("*/metrics.json")) and (root / "summary.csv").is_file():
        for page in args.page:  # a committed report without its runs: it feeds the pages as it is
            _fill_page(page)
        return 0
    skipped: list[str] = []
    runs = _library_call(results.load_runs, root, skipped=skipped)
    written = pages.write_report(runs, root, pair=tuple(args.compare))
    print(written["markdown"])
    for line in skipped:
        print(f"left out: {line}")
    print("wrote " + ", ".join(str(root / f) for f in written["files"]))
    for page in args.page or ():
        _fill_page(page)
    return 0


def _fill_page(page) -> None:
    """Rewrite the generated tables of a Markdown page (`pages.BLOCK`) from the committed runs."""
    from pathlib import Path
    from minifreeze.lab import pages
    from minifreeze.storage import write_atomic
    path = Path(page)
    try:
        text = path.read_text()
    except OSError as err:
        raise CLIError(f"--page {page}: cannot read it ({err.strerror or err})") from None
    new = _library_call(pages.fill_page, text, path.parent)
    if new != text:
        write_atomic(path, new.encode())
    print(f"{page}: {len(pages.BLOCK.findall(new))} generated table(s) "
          f"{'rewritten' if new != text else 'already current'}")


def cmd_publish(args) -> int:
    """SRC's finished runs -> DST (metrics.json, and small model files), then DST's report."""
    from pathlib import Path
    from minifreeze.lab import runs
    if not Path(args.src).is_dir():
        raise CLIError(f"{args.src}: no such folder (expected a sweep's folder, e.g. runs/paper)")
    copied = _library_call(runs.publish, args.src, _writable_folder(args.dst))
    print(f"published {len(copied)} run(s) from {args.src} into {args.dst}"
          + "".join(f"\n  {name}" for name in copied))
    args.dir, args.compare, args.page = args.dst, methods.HEADLINE, None
    return cmd_report(args)


def cmd_price(args) -> int:
    """Stored sizes for DIR's runs recorded before runs measured them, from their model files."""
    from pathlib import Path
    from minifreeze.lab import runs
    if not Path(args.dir).is_dir():
        raise CLIError(f"{args.dir}: no such folder (expected a results folder, e.g. "
                       f"notebooks/results/study_relu)")
    priced, unpriced = _library_call(runs.price, args.dir)
    print(f"priced {len(priced)} run(s) into {Path(args.dir) / runs.PRICED}"
          if priced else f"{args.dir}: no run to price")
    for name, why in unpriced.items():
        print(f"  not priced: {name}: {why}")
    return 0


def add_pipeline_commands(sub) -> None:
    from minifreeze import train as T
    from minifreeze.lab import sweep
    about = ", ".join(f"{k} ({v.about})" for k, v in T.METHODS.items())
    p = sub.add_parser("train", help="train one configuration; write model.mfz and metrics.json")
    add_model_arguments(p)
    add_backend_argument(p)
    p.add_argument("--method", required=True, choices=list(T.METHODS), help=about)
    add_config_arguments(p, skip=("model", "method"))
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="with --epochs auto: time a few steps, then fit the epochs to this budget "
                        "(the result then depends on the machine's speed)")
    add_data_arguments(p)
    add_state_argument(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="a grid of runs (models x methods x rates x seeds), "
                                     "resumable, on a process pool or a Dask cluster")
    p.add_argument("--models", nargs="+", required=True, choices=sorted(models.MODELS))
    p.add_argument("--methods", nargs="+", required=True, metavar="METHOD",
                   help=f"any of {', '.join(T.METHODS)} (dense is always included)")
    p.add_argument("--rates", nargs="+", type=float, default=None, metavar="Q",
                   help="rates q for every method but dense and elsa")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED")
    p.add_argument("--order", choices=sweep.ORDERS, default="grid",
                   help="run order: grid (model, method, rate, seed) or seed (every run of the "
                        "first seed first: a stopped sweep holds whole comparisons)")
    add_conv_relu_argument(p)
    add_conv_argument(p)
    add_config_arguments(p, skip=("model", "method", "rate", "seed"))
    add_data_arguments(p)
    add_backend_argument(p)
    p.add_argument("--executor", choices=sweep.EXECUTORS, default="process",
                   help="process: a local pool, one single-threaded run per core (default); "
                        "dask: a Dask distributed cluster (pip install 'minifreeze[cluster]'); "
                        "thread: one run at a time in this process")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes (or LocalCluster workers) to run at once (default: one per CPU)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="with --executor dask: a running scheduler, e.g. tcp://HOST:8786 "
                        "(default: start a LocalCluster)")
    add_state_argument(p)
    p.add_argument("--out", required=True, help="results folder: one sub-folder per run")
    p.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_sweep)

    for name, func, text in (("evaluate", cmd_evaluate, "test accuracy of a saved .mfz model"),
                             ("inspect", cmd_inspect, "what an .mfz file holds, tensor by tensor")):
        p = sub.add_parser(name, help=text)
        p.add_argument("path", help="an .mfz file")
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "evaluate":
            from minifreeze import data
            add_backend_argument(p)
            p.add_argument("--dataset", choices=data.DATASETS, default=None,
                           help="default: the dataset recorded in the file")
            p.add_argument("--download", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("extract", help="write one level of an ELSA file as an ordinary pruned .mfz")
    p.add_argument("path", help="an .mfz file written by --method elsa")
    p.add_argument("--rate", type=float, required=True, help="the level's rate q")
    p.add_argument("--out", required=True, help="the .mfz file to write")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("report", help="tables and figures of DIR/*/metrics.json: per run, and "
                                      "mean +- std over seeds")
    p.add_argument("dir", help="folder holding one sub-folder per run")
    p.add_argument("--compare", nargs=2, default=methods.HEADLINE, metavar=("A", "B"),
                   help="two methods the report compares by a paired t-test over their seeds "
                        "(default freezenet snip)")
    p.add_argument("--page", action="append", metavar="FILE",
                   help="also rewrite the generated tables (<!-- table: DIR KIND -->) of this "
                        "Markdown page, e.g. README.md; repeatable")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("publish", help="copy SRC's finished runs (metrics.json, and model files "
                                       "up to 256 KB) into DST, e.g. notebooks/results/paper, "
                                       "and write DST's report")
    p.add_argument("src", help="a sweep's folder, e.g. runs/paper")
    p.add_argument("dst", help="the folder kept in version control")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("price", help="the stored sizes (the .mfz and every parameter as float32, "
                                     "each gzipped) of DIR's runs that did not record them, from "
                                     "their model files, into DIR/storage_priced.json")
    p.add_argument("dir", help="a results folder, e.g. notebooks/results/study_relu")
    p.set_defaults(func=cmd_price)


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
