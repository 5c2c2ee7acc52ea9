"""Many runs: a grid of configurations, one training run per folder, on any executor.

FreezeNet's claim is a comparison across rates and seeds, so the unit of work is one run: a
`RunSpec` (a resolved `TrainConfig` plus the data it sees) and the pure function `run(spec, out)`,
which trains, writes `out/model.mfz` and then `out/metrics.json`, and returns the metrics. It
shares no state with other runs, so any `concurrent.futures` executor can run a grid of them, and
the result does not depend on which worker ran it:

    specs = expand_grid(["lenet5"], ["freezenet", "snip"], [0.99, 0.995], [0, 1, 2],
                        base=protocol_config("short", epochs=10))
    with make_executor("process", workers=2) as ex:       # or "dask", scheduler="tcp://..."
        result = sweep(specs, "runs/study", ex)            # resumable: finished runs are kept

Finished is a property of the files, not of a database: `metrics.json` is written last,
atomically, and carries a SHA-256 of its own contents and of the model file it describes. A run
counts as finished only if its metrics parse, their checksum holds, they were made from the same
spec, and the model file's checksum matches; anything else (a run killed half-way, a truncated or
edited file) is run again. A killed sweep loses at most the runs in flight.

The grid always includes dense; rate-free methods (dense, elsa) run once per model and seed, every
other method once per rate. Run names are deterministic: `lenet5-freezenet-q0.995-s0-<8 hex>`
(`lenet5_relu-...` for LeNet-5 with conv ReLU, `models.network_name`), the hex a hash of the
whole spec, so two specs never share a folder.

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
import hashlib
import json
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from minifreeze import backend, data as D, masks as M, models, parallel, report, storage
from minifreeze import train as T

EXECUTORS = ("process", "dask", "thread")
METRICS, MODEL, LAST_GOOD = "metrics.json", "model.mfz", "last_good.mfz"


class SweepError(ValueError):
    """A grid that cannot run (an unknown method, a rate outside [0, 1), no scheduler there)."""


@dataclass(frozen=True)
class RunSpec:
    """One training run: the config (resolved) and the data it trains and tests on."""
    config: T.TrainConfig
    dataset: str = "mnist"
    limit_train: int | None = None
    limit_test: int | None = None
    val_fraction: float = 0.0

    def to_dict(self) -> dict:
        return {"config": _jsonable(dataclasses.asdict(self.config)), "dataset": self.dataset,
                "limit_train": self.limit_train, "limit_test": self.limit_test,
                "val_fraction": self.val_fraction}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """The spec of `to_dict`; config fields it does not name take TrainConfig's defaults (a
        field added later, whose default keeps the old behaviour, leaves old runs finished)."""
        known = {f.name for f in dataclasses.fields(T.TrainConfig)}
        config = T.TrainConfig(**{k: v for k, v in d["config"].items() if k in known})
        return cls(config.resolved(), d["dataset"], d["limit_train"], d["limit_test"],
                   d["val_fraction"])

    @property
    def name(self) -> str:
        """`model-method[-q<rate>]-s<seed>-<hash>`: readable, and unique per spec. The hash
        covers the data fields and the config fields that differ from TrainConfig's defaults
        (resolved), so adding a field with a default renames no finished run."""
        c = self.config
        rate = "" if T.METHODS[c.method].when in ("never", "phases") else f"-q{c.rate!r}"
        d = self.to_dict()
        defaults = _jsonable(dataclasses.asdict(T.TrainConfig(model=c.model,
                                                              method=c.method).resolved()))
        d["config"] = {k: v for k, v in d["config"].items() if defaults.get(k) != v}
        net = models.network_name(c.model, c.model_kwargs)
        return f"{net}-{c.method}{rate}-s{c.seed}-{_digest(d)[:8]}"


def _jsonable(obj):
    """Tuples as lists, as JSON gives them back, so a spec equals its own round trip."""
    return json.loads(json.dumps(obj))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# --- one run ------------------------------------------------------------------------------------

_DATA: dict = {}


def load_data(spec: RunSpec, *, download: bool = False) -> D.Dataset:
    """The dataset a spec trains on (verified; limited and split as it says), kept per process."""
    key = (spec.dataset, spec.limit_train, spec.limit_test, spec.val_fraction,
           spec.config.seed if spec.val_fraction else None)
    if key not in _DATA:
        ds = D.load_dataset(spec.dataset, download=download)
        ds = D.split_validation(ds, spec.val_fraction, spec.config.seed)
        ds = D.limit_test(D.limit_train(ds, spec.limit_train), spec.limit_test)
        _DATA.clear()  # one dataset at a time: a worker runs one spec after another
        _DATA[key] = ds
    return _DATA[key]


def train_any(config: T.TrainConfig, data: D.Dataset, *, progress: bool | None = None):
    """Train any method: `train.train`, or `elsa.train` for the nested method."""
    if T.METHODS[config.method].when == "phases":
        from minifreeze import elsa
        return elsa.train(config, data, progress=progress)
    return T.train(config, data, progress=progress)


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def finished(out, spec: RunSpec | None = None) -> dict | None:
    """The metrics of a finished run in folder `out`, or None if it has to be (re)done.

    Finished: metrics.json parses, its checksum holds, it was made from `spec` (if given), and
    the model file it names (model.mfz, or last_good.mfz for a run that diverged) has the
    checksum it recorded.
    """
    out = Path(out)
    try:
        metrics = json.loads((out / METRICS).read_text())
    except (OSError, ValueError):
        return None
    if not report.is_sealed(metrics):
        return None
    if spec is not None:
        try:
            if RunSpec.from_dict(metrics["spec"]) != spec:
                return None
        except (KeyError, TypeError, ValueError):
            return None
    model = out / (LAST_GOOD if "diverged" in metrics else MODEL)
    if metrics.get("model_sha256") is None or _file_sha256(model) != metrics["model_sha256"]:
        return None
    return metrics


def run(spec: RunSpec, out, *, data: D.Dataset | None = None, progress: bool | None = None,
        plan: dict | None = None) -> dict:
    """Train one spec; write out/model.mfz, then out/metrics.json (both atomically); return the
    metrics. A run that diverges writes out/last_good.mfz and metrics that say where instead
    (`"diverged"`, no test accuracy) and returns them: it is finished too, since running it
    again would diverge again."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).unlink(missing_ok=True)  # a redo is unfinished until its metrics are written
    c = spec.config.resolved()
    t0 = time.perf_counter()
    data = load_data(spec) if data is None else data
    try:
        result = train_any(c, data, progress=progress)
    except T.TrainingDiverged as err:
        return _diverged(spec, out, err)
    ckpt = result.checkpoint()
    ckpt.meta["dataset"] = spec.dataset
    file_bytes = storage.save(out / MODEL, ckpt)
    metrics = report.run_metrics(result, dataset=spec.dataset, file_bytes=file_bytes,
                                 wall_seconds=time.perf_counter() - t0,
                                 backend=backend.get_backend(), plan=plan,
                                 environment=run_environment(c))
    if hasattr(result, "level_map"):  # ELSA: each level as extracted from the final network
        from minifreeze import elsa
        rows = elsa.level_metrics(result, data, batch_size=c.eval_batch)
        info = storage.describe(out / MODEL)  # the file as written: its level rows and map bytes
        for row, sizes in zip(rows, info["level_rows"]):
            row.update(extracted_bytes=sizes["extracted_bytes"], joined_bytes=sizes["joined_bytes"],
                       own_mask_bytes=sizes["own_mask_bytes"])
        metrics.update(levels=rows, phase_seconds=result.phase_seconds,
                       level_map_bytes=info["mask_bytes"])
    metrics.update(run=out.name, spec=spec.to_dict(), model_sha256=_file_sha256(out / MODEL))
    metrics = report.seal(_jsonable(metrics))
    storage.write_atomic(out / METRICS, (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics


def run_environment(c: T.TrainConfig) -> dict:
    """Where a run of config `c` runs now: `environment.environment` with its shard count."""
    from minifreeze.environment import environment
    model = models.get_model(c.model, **c.model_kwargs)
    return environment(shards=parallel.resolve_shards(model, c.shards, c.batch_size),
                       backend=backend.get_backend())


def _diverged(spec: RunSpec, out: Path, err: T.TrainingDiverged) -> dict:
    import math
    c = spec.config.resolved()
    masks, mode, rate = dict(err.masks or {}), c.mode, c.rate
    if T.METHODS[c.method].when == "phases":  # an ELSA phase: keep the values, not its masks
        masks, mode = {}, "prune"
    if masks:  # a gradual method may diverge between rates: record the rate its masks have
        kept, n = sum(int(m.sum()) for m in masks.values()), sum(m.size for m in masks.values())
        rate = rate if M.keep_count(n, rate) == kept else 1 - kept / n
    storage.save(out / LAST_GOOD, storage.Checkpoint(
        c.model, err.params, masks, err.buffers, c.seed, c.init, mode,
        {**T.checkpoint_meta(c), "rate": rate, "dataset": spec.dataset}, dict(c.model_kwargs)))
    loss = err.loss if math.isfinite(err.loss) else str(err.loss)  # JSON has no NaN
    metrics = report.seal(_jsonable({
        "model": c.model, "network": models.network_name(c.model, c.model_kwargs),
        "method": c.method, "rate": c.rate, "seed": c.seed,
        "dataset": spec.dataset, "run": out.name, "spec": spec.to_dict(),
        "environment": run_environment(c),
        "diverged": {"epoch": err.epoch, "step": err.step, "loss": loss, "why": err.why},
        "config": dataclasses.asdict(c), "history": err.history,
        "model_sha256": _file_sha256(out / LAST_GOOD)}))
    storage.write_atomic(out / METRICS, (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics


def work(spec_dict: dict, out: str, backend_name: str | None = None) -> dict:
    """What a worker runs: one spec, single-threaded BLAS when the run has one shard. Top-level
    and fed plain dicts, so every executor can pickle it."""
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
        return run(spec, out, progress=False)


PUBLISH_MODEL_BYTES = 256 * 1024
"""`publish` copies a run's model file only up to this size (sparse runs: about 15 KB; a dense
LeNet-5 is 1.7 MB and is regenerated by running the spec again)."""


def publish(src, dst, *, max_model_bytes: int = PUBLISH_MODEL_BYTES) -> list[str]:
    """Copy every finished run of folder `src` into `dst` (a folder kept in version control):
    its metrics.json and, when at most `max_model_bytes`, its model file (model.mfz, or
    last_good.mfz for a diverged run). A run already in `dst` with the same checksum is left as
    it is; each file is written atomically. Returns the names of the runs copied."""
    src, dst = Path(src), Path(dst)
    copied = []
    for folder in sorted(p.parent for p in src.glob(f"*/{METRICS}")):
        metrics = finished(folder)
        if metrics is None:
            continue  # unfinished, altered or without its model file: nothing to publish
        target = dst / folder.name
        try:
            old = json.loads((target / METRICS).read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old.get("checksum") == metrics["checksum"]:
            continue
        target.mkdir(parents=True, exist_ok=True)
        model = folder / (LAST_GOOD if "diverged" in metrics else MODEL)
        if model.stat().st_size <= max_model_bytes:
            storage.write_atomic(target / model.name, model.read_bytes())
        storage.write_atomic(target / METRICS, (folder / METRICS).read_bytes())
        copied.append(folder.name)
    return copied


# --- a grid -------------------------------------------------------------------------------------

def expand_grid(models, methods, rates, seeds, *, base: T.TrainConfig | None = None,
                dataset: str = "mnist", limit_train: int | None = None,
                limit_test: int | None = None, val_fraction: float = 0.0) -> list[RunSpec]:
    """Every combination as a RunSpec, in a fixed order (model, method, rate, seed); dense is
    always included; rate-free methods (dense, elsa) once per model and seed. `base` gives every
    other field (default: the short protocol, one shard per run). Raises SweepError on a bad grid,
    before anything runs."""
    base = T.TrainConfig(shards=1) if base is None else base
    models, methods, seeds = list(models), list(methods), list(seeds)
    unknown = [m for m in methods if m not in T.METHODS]
    if unknown:
        raise SweepError(f"unknown method {unknown[0]!r}; expected any of {', '.join(T.METHODS)}")
    try:
        rates = [M.check_rate(q) for q in rates]
    except ValueError as err:
        raise SweepError(str(err)) from None
    if not models or not seeds:
        raise SweepError("a grid needs at least one model and one seed")
    if any(T.METHODS[m].when in ("init", "during") for m in methods) and not rates:
        raise SweepError(f"methods {', '.join(methods)} need at least one rate")
    methods = ["dense"] + [m for m in methods if m != "dense"]
    specs, seen = [], set()
    for model in models:
        for method in methods:
            once = T.METHODS[method].when in ("never", "phases")
            for q in ([base.rate] if once else rates):
                for seed in seeds:
                    try:
                        c = dataclasses.replace(base, model=model, method=method, rate=q,
                                                seed=seed).resolved()
                    except ValueError as err:
                        raise SweepError(f"{model} {method} rate {q} seed {seed}: {err}") from None
                    spec = RunSpec(c, dataset, limit_train, limit_test, val_fraction)
                    if spec.name not in seen:
                        seen.add(spec.name)
                        specs.append(spec)
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
        with cf.ProcessPoolExecutor(max_workers=workers,
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
          progress: bool | None = None) -> SweepResult:
    """Run every spec whose folder root/<spec.name> is not finished; keep the rest as it is.

    A run that raises is recorded in `failed` and the others go on. Without an executor the runs
    go one after another through a thread of this process.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = {s.name: m for s in specs if (m := finished(root / s.name, s)) is not None}
    todo = [s for s in specs if s.name not in done]
    failed: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(make_executor("thread"))
        futures = {executor.submit(work, s.to_dict(), str(root / s.name), backend.get_backend()):
                   s for s in todo}
        bar = stack.enter_context(T._progress(len(specs), "runs", progress))
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
