"""Command line: `python -m minifreeze <command> ...`.

    python -m minifreeze info --model lenet5 [--json]
    python -m minifreeze info --backends          # which backends run here, and why not
    python -m minifreeze --backend numpy <command> ...   # any command on a chosen backend

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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minifreeze",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        apply_backend(args)
        return args.func(args)
    except CLIError as err:
        print(f"minifreeze: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
