"""The shape of the package: no import cycles, kernels below the layers, one name per thing.

The import graph is read from the source with `ast` (every `import` counts, also one inside a
function), so a cycle cannot hide behind a late import.
"""

import ast
import dataclasses
from pathlib import Path

import pytest

from minifreeze.lab.cli import make_parser
from minifreeze.train import TrainConfig

PACKAGE = Path(__file__).resolve().parent.parent / "minifreeze"
KERNELS = {"im2col", "winograd", "kernels_sparse", "kernels_numba", "kernels_cuda"}
"""The kernel modules: NumPy references (dense, Winograd, sparse), Numba, CUDA."""


def modules() -> dict[str, Path]:
    """Every module by its name under the package: `train`, `lab.runs`, ..."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] != "__init__":
            out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module in ("minifreeze", "minifreeze.lab"):
                    prefix = node.module.removeprefix("minifreeze").lstrip(".")
                    deps |= {f"{prefix}.{a.name}".lstrip(".") for a in node.names}
                elif node.module.startswith("minifreeze."):
                    deps.add(node.module.removeprefix("minifreeze."))
            elif isinstance(node, ast.Import):
                deps |= {a.name.removeprefix("minifreeze.") for a in node.names
                         if a.name.startswith("minifreeze.")}
        graph[name] = (deps & set(mods)) - {name}
    return graph


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_import_cycles():
    graph = import_graph()
    cycles = sorted(m for m in graph if m in reachable(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_lessons_never_import_the_lab():
    """Two rooms: the core (`minifreeze/*.py`) teaches; the lab (`minifreeze/lab/`: runs,
    sweeps, the command line, the report) uses it and is never used by it."""
    graph = import_graph()
    assert any(m.startswith("lab.") for m in graph) and "train" in graph
    upward = {m: sorted(d for d in deps if d.startswith("lab."))
              for m, deps in graph.items() if not m.startswith("lab.") and m != "__main__"}
    assert not {m: d for m, d in upward.items() if d}, upward
    assert "__main__" in graph and graph["__main__"] == {"lab.cli"}  # the shim, and only that


def test_kernels_import_nothing_above_them():
    graph = import_graph()
    for kernel in KERNELS:
        assert reachable(graph, kernel) <= KERNELS, (kernel, reachable(graph, kernel))


def test_backend_sits_below_layers_and_trainers():
    graph = import_graph()
    assert reachable(graph, "backend") <= KERNELS | {"optim", "masks"}


def test_process_wide_tuning_is_only_for_programs():
    """kept_freed_memory changes malloc for the whole process: only the command line and a
    sweep's own worker processes (checked by `multiprocessing.parent_process()`) call it."""
    callers = sorted(name for name, path in modules().items()
                     if "kept_freed_memory(" in path.read_text() and name != "parallel")
    assert callers == ["lab.cli", "lab.sweep"]


@pytest.mark.parametrize("own_process", [False, True])
def test_a_sweep_worker_tunes_malloc_only_in_its_own_process(monkeypatch, own_process):
    import contextlib
    import multiprocessing
    from minifreeze import parallel
    from minifreeze.lab import sweep
    entered = []

    @contextlib.contextmanager
    def recorder():
        entered.append(True)
        yield True

    monkeypatch.setattr(parallel, "kept_freed_memory", recorder)
    monkeypatch.setattr(sweep, "run", lambda spec, out, progress, state_every:
                        {"ran": spec.name, "state_every": state_every})
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object() if own_process
                        else None)
    spec = sweep.expand_grid(["lenet300"], ["snip"], [0.9], [0])[1]
    assert sweep.work(spec.to_dict(), "unused", None, 3) == {"ran": spec.name, "state_every": 3}
    assert entered == ([True] if own_process else [])


def _subcommand(name):
    return make_parser()._subparsers._group_actions[0].choices[name]


def test_every_config_field_has_its_flag():
    from minifreeze.lab.cli import config_from_args
    train = _subcommand("train")
    flags = {o for a in train._actions for o in a.option_strings}
    from minifreeze import methods
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("model_kwargs", "options")]
    fields += list(methods.option_defaults())  # every method's options, one flat flag each
    missing = [f for f in fields if "--" + f.replace("_", "-") not in flags]
    assert not missing, f"TrainConfig fields and options without a flag of the same name: {missing}"
    sweep_flags = {o for a in _subcommand("sweep")._actions for o in a.option_strings}
    plural = {"model": "--models", "method": "--methods", "rate": "--rates", "seed": "--seeds"}
    missing = [f for f in fields if plural.get(f, "--" + f.replace("_", "-")) not in sweep_flags]
    assert not missing, f"TrainConfig fields the sweep cannot set: {missing}"
    # a flag not given takes the protocol's value: short is TrainConfig's own defaults
    args = make_parser().parse_args(["train", "--model", "lenet5", "--method", "freezenet",
                                     "--out", "x"])
    assert config_from_args(args, model="lenet5", method="freezenet") == TrainConfig().resolved()
