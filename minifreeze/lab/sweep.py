"""Many runs: a grid of configurations, one training run per folder, on any executor.

FreezeNet's claim is a comparison across rates and seeds, so a study is a grid of runs
(`runs.py`: `RunSpec`, `run`, `finished`). Each run shares no state with the others, so any
`concurrent.futures` executor can run the grid, and the result does not depend on which worker
ran it:

    specs = expand_grid(["lenet5"], ["freezenet", "snip"], [0.99, 0.995], [0, 1, 2],
                        base=protocol_config("short", epochs=10))
    with make_executor("process", workers=2) as ex:       # or "dask", scheduler="tcp://..."
        result = sweep(specs, "runs/study", ex)            # resumable: finished runs are kept

Resumable through the files (`runs.finished`): a killed sweep loses at most the runs in flight,
and a pool's worker whose sweep is gone (killed by a signal, say) exits rather than train on into a
folder a restarted sweep may be writing (`_exit_with_parent`).
The grid always includes dense; rate-free methods (dense, elsa) run once per model and seed, every
other method once per rate.

Executors (`make_executor`): "process" (the default: a local process pool, one run per core, each
run on one shard with one BLAS thread), "dask" (Dask's `distributed.Client`; with no scheduler
address it starts a `LocalCluster` of single-threaded workers; `pip install 'minifreeze[cluster]'`)
and "thread" (one run at a time in this process: for notebooks). Notebook `07_study` walks through
this file.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from minifreeze import backend, masks as M, models, parallel
from minifreeze import train as T
from minifreeze.methods import baseline
from minifreeze.lab.runs import STATE_EVERY, RunSpec, finished, run

EXECUTORS = ("process", "dask", "thread")
ORDERS = ("grid", "seed")


class SweepError(ValueError):
    """A grid that cannot run (an unknown method, a rate outside [0, 1), no scheduler there)."""


# --- a worker -----------------------------------------------------------------------------------

def work(spec_dict: dict, out: str, backend_name: str | None = None,
         state_every: int = STATE_EVERY) -> dict:
    """What a worker runs: one spec, single-threaded BLAS when the run has one shard, its
    training state saved every `state_every` epochs. Top-level and fed plain dicts, so every
    executor can pickle it."""
    spec = RunSpec.from_dict(spec_dict)
    if backend_name is not None:
        backend.set_backend(backend_name)
    c = spec.config
    one = parallel.resolve_shards(models.get_model(c.model, **c.model_kwargs), c.shards,
                                  c.batch_size) == 1
    own_process = multiprocessing.parent_process() is not None
    with contextlib.ExitStack() as stack:
        if one:
            stack.enter_context(parallel.blas_threads(1))
        if own_process:  # a pool's worker process is ours: keep malloc's freed blocks
            stack.enter_context(parallel.kept_freed_memory())
        return run(spec, out, progress=False, state_every=state_every)


def _exit_with_parent() -> None:
    """A process pool's initializer: a daemon thread that ends this worker once the process that
    started it is gone. A sweep killed by a signal (SIGTERM, SIGKILL) runs no clean-up, and its
    spawned workers would otherwise train their runs to the end as orphans, beside the workers of
    a restarted sweep in the same folders. What a run saved (its state every few epochs, each
    file written whole under a temporary name) stays, so the next sweep resumes it."""
    import os
    import threading
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        parent.join()  # returns when the parent's end of the pipe closes: it exited or was killed
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


# --- a grid -------------------------------------------------------------------------------------

def _options(method: str, base: T.TrainConfig, flat: Mapping | None):
    """The options of `method` in a grid: from the flat values if any, else base's when they are
    this method's kind (a mapping, flat: each method takes the fields it has), else None (its
    defaults)."""
    m = T.METHODS[method]
    o = flat or base.options
    if m.Options is None or o is None:
        return None
    if isinstance(o, Mapping):
        return m.options_from(o)
    return o if isinstance(o, m.Options) else None


def expand_grid(models, methods, rates, seeds, *, base: T.TrainConfig | None = None,
                dataset: str = "mnist", limit_train: int | None = None,
                limit_test: int | None = None, val_fraction: float = 0.0,
                order: str = "grid", options: Mapping | None = None) -> list[RunSpec]:
    """Every combination as a RunSpec, in a fixed order (model, method, rate, seed; with
    `order="seed"` seed first, so that a sweep stopped half-way holds whole comparisons of the
    first seeds); dense is always included; rate-free methods (dense, elsa) once per model and
    seed. `base` gives every other field (default: the short protocol, one shard per run; its
    `options` go to the methods they belong to). `options`: flat option values by field name
    (`methods.option_defaults`), each method taking the ones it has (the command line's flags).
    Raises SweepError on a bad grid, before anything runs."""
    if order not in ORDERS:
        raise SweepError(f"unknown order {order!r}; expected one of {', '.join(ORDERS)}")
    base = T.TrainConfig(shards=1) if base is None else base
    models, methods, seeds = list(models), list(methods), list(seeds)
    unknown = [m for m in methods if m not in T.METHODS]
    if unknown:
        raise SweepError(f"unknown method {unknown[0]!r}; expected any of {', '.join(T.METHODS)}")
    base_method = baseline()
    uses_rate = {m: T.METHODS[m].uses_rate for m in [base_method, *methods]}
    try:
        rates = [M.check_rate(q) for q in rates]
    except ValueError as err:
        raise SweepError(str(err)) from None
    if not models or not seeds:
        raise SweepError("a grid needs at least one model and one seed")
    if any(uses_rate[m] for m in methods) and not rates:
        raise SweepError(f"methods {', '.join(methods)} need at least one rate")
    methods = [base_method] + [m for m in methods if m != base_method]
    specs, seen = [], set()
    for model in models:
        for method in methods:
            once = not uses_rate[method]
            for q in ([base.rate] if once else rates):
                for seed in seeds:
                    try:
                        c = dataclasses.replace(base, model=model, method=method, rate=q,
                                                seed=seed, options=_options(method, base, options)
                                                ).resolved()
                    except ValueError as err:
                        raise SweepError(f"{model} {method} rate {q} seed {seed}: {err}") from None
                    spec = RunSpec(c, dataset, limit_train, limit_test, val_fraction)
                    if spec.name not in seen:
                        seen.add(spec.name)
                        specs.append(spec)
    if order == "seed":  # stable: within a seed the grid's order
        specs.sort(key=lambda spec: seeds.index(spec.config.seed))
    return specs


@contextlib.contextmanager
def make_executor(kind: str = "process", workers: int | None = None,
                  scheduler: str | None = None) -> Iterator[cf.Executor]:
    """A concurrent.futures executor: a local process pool, Dask's, or one thread here.

    process: `workers` processes (default one per CPU), started with "spawn" (no thread state is
    inherited). dask: `distributed.Client(scheduler)`, or a `LocalCluster` of `workers`
    single-threaded worker processes when no address is given; the executor is the client's own
    (`Client.get_executor`). thread: one run at a time in this process.
    """
    if kind not in EXECUTORS:
        raise SweepError(f"unknown executor {kind!r}; expected one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise SweepError(f"workers: expected a whole number >= 1, got {workers}")
    if scheduler is not None and kind != "dask":
        raise SweepError("a scheduler address needs --executor dask")
    workers = workers or parallel.cpu_count()
    if kind == "thread":
        with cf.ThreadPoolExecutor(max_workers=1) as ex:
            yield ex
    elif kind == "process":
        with cf.ProcessPoolExecutor(max_workers=workers, initializer=_exit_with_parent,
                                    mp_context=multiprocessing.get_context("spawn")) as ex:
            yield ex
    else:
        try:
            from distributed import Client, LocalCluster
        except ImportError as err:
            raise SweepError(f"--executor dask needs Dask's distributed ({err}); pip install "
                             f"'minifreeze[cluster]'") from None
        with contextlib.ExitStack() as stack:
            if scheduler is None:
                cluster = stack.enter_context(LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    dashboard_address=None))
                address = cluster
            else:
                address = scheduler
            try:
                client = stack.enter_context(Client(address, timeout="10s"))
            except (OSError, TimeoutError, ValueError) as err:
                raise SweepError(f"no Dask scheduler at {scheduler}: {err}") from None
            yield client.get_executor(pure=False)


@dataclass
class SweepResult:
    metrics: list[dict]        # one per finished spec, in spec order
    skipped: int               # already finished before this call
    failed: dict[str, str]     # run name -> the error
    seconds: float

    @property
    def ran(self) -> int:
        return len(self.metrics) - self.skipped


def sweep(specs: list[RunSpec], root, executor: cf.Executor | None = None, *,
          progress: bool | None = None, state_every: int = STATE_EVERY) -> SweepResult:
    """Run every spec whose folder root/<spec.name> is not finished; keep the rest as it is.
    Each run saves its training state every `state_every` epochs (`runs.run`) and, started again,
    goes on from it.

    A run that raises is recorded in `failed` and the others go on. Without an executor the runs
    go one after another through a thread of this process.
    """
    try:
        T.check_state_every(state_every)
    except ValueError as err:
        raise SweepError(str(err)) from None
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = {s.name: m for s in specs if (m := finished(root / s.name, s)) is not None}
    todo = [s for s in specs if s.name not in done]
    failed: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(make_executor("thread"))
        futures = {executor.submit(work, s.to_dict(), str(root / s.name), backend.get_backend(),
                                   state_every):
                   s for s in todo}
        bar = stack.enter_context(T.progress_bar(len(specs), "runs", progress))
        bar.update(len(done))
        try:
            for fut in cf.as_completed(futures):
                spec = futures[fut]
                try:
                    done[spec.name] = fut.result()
                except Exception as err:  # one bad run must not lose the others
                    failed[spec.name] = f"{type(err).__name__}: {err}"
                bar.update(1)
        except BaseException:  # interrupted: runs not started never start; finished ones stay
            for fut in futures:
                fut.cancel()
            raise
    skipped = len(specs) - len(todo)
    return SweepResult([done[s.name] for s in specs if s.name in done], skipped, failed,
                       time.perf_counter() - t0)
