"""One training run and its files: what a run is, how it runs, and how its record is sealed.

The unit of work of every study is one run: a `RunSpec` (a resolved `TrainConfig` plus the data
it sees) and the pure function `run(spec, out)`, which trains, writes `out/model.mfz` and then
`out/metrics.json`, and returns the metrics. It shares no state with other runs, so the sweep
(`sweep.py`) can hand a grid of them to any executor, and the result does not depend on which
worker ran it:

    spec = RunSpec(protocol_config("short", model="lenet5", method="freezenet").resolved())
    metrics = run(spec, "runs/one")          # runs/one/model.mfz, runs/one/metrics.json
    finished("runs/one", spec)               # the metrics again, or None if it must be redone
    publish("runs/study", "notebooks/results/study")   # finished runs into a committed folder

Finished is a property of the files, not of a database: `metrics.json` is written last,
atomically, and carries a SHA-256 of its own contents (`seal`, `is_sealed`) and of the model file
it describes. A run counts as finished only if its metrics parse, their checksum holds, they were
made from the same spec, and the model file's checksum matches; anything else (a run killed
half-way, a truncated or edited file) is run again.

Run names are deterministic: `lenet5-freezenet-q0.995-s0-<8 hex>` (`lenet5_relu-...` for LeNet-5
with conv ReLU, `models.network_name`), the hex a hash of the whole spec, so two specs never
share a folder. Each run records where it ran (`environment.py`). Notebook `07_study` walks
through this file and `sweep.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from minifreeze import backend, data as D, masks as M, methods, models, parallel, storage
from minifreeze import train as T

METRICS, MODEL, LAST_GOOD = "metrics.json", "model.mfz", "last_good.mfz"
STATE = "state.npz"
"""A run's saved training state while it trains (`train.StateFile`), deleted when it finishes."""

STATE_EVERY = T.StateFile.every
"""Epochs between two saves of a run's training state, by default (`train.StateFile`'s): a
250-epoch paper run saves every 5 epochs (about 4-7 minutes of LeNet-5 on one core), so a stopped
machine loses at most that. Runs with long epochs save more often (`run(state_every=1)`,
`--state-every 1`: the small VGG's Fashion-MNIST epoch is some 6 minutes on one core, and 5 of
its 8 epochs are most of a run)."""


def fit_input(config: T.TrainConfig, dataset: str) -> T.TrainConfig:
    """`config` with its model's input shape set to `dataset`'s images where the builder takes
    one (vgg, vgg_d), the config names none and the builder's default differs (the small VGG on
    MNIST or Fashion-MNIST: 1x28x28); otherwise `config` itself. So `--dataset fashion-mnist
    --model vgg` needs no --input-shape, and the run records the shape it trained with."""
    import inspect
    shape = D.IMAGE_SHAPES.get(dataset)
    if (shape is None or "input_shape" not in models.MODEL_KWARGS.get(config.model, ())
            or "input_shape" in config.model_kwargs):
        return config
    default = inspect.signature(models.MODELS[config.model]).parameters["input_shape"].default
    if tuple(default) == tuple(shape):
        return config
    return dataclasses.replace(config, model_kwargs={**config.model_kwargs,
                                                     "input_shape": list(shape)}).resolved()


@dataclass(frozen=True)
class RunSpec:
    """One training run: the config (resolved) and the data it trains and tests on."""
    config: T.TrainConfig
    dataset: str = "mnist"
    limit_train: int | None = None
    limit_test: int | None = None
    val_fraction: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "config", fit_input(self.config, self.dataset))

    def to_dict(self) -> dict:
        return {"config": _jsonable(dataclasses.asdict(self.config)), "dataset": self.dataset,
                "limit_train": self.limit_train, "limit_test": self.limit_test,
                "val_fraction": self.val_fraction}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """The spec of `to_dict` (or of an earlier version: `TrainConfig.from_dict` reads flat
        options too); config fields it does not name take TrainConfig's defaults (a field added
        later, whose default keeps the old behaviour, leaves old runs finished)."""
        config = T.TrainConfig.from_dict(d["config"])
        return cls(config.resolved(), d["dataset"], d["limit_train"], d["limit_test"],
                   d["val_fraction"])

    @property
    def name(self) -> str:
        """`model-method[-q<rate>]-s<seed>-<hash>`: readable, and unique per spec. The hash
        covers the data fields and the config fields that differ from TrainConfig's defaults
        (resolved), in the flat form (`TrainConfig.flat`: options spread out), so adding a field
        with a default, or nesting options, renames no finished run."""
        c = self.config
        method = methods.get(c.method)
        rate = f"-q{c.rate!r}" if method.uses_rate else ""
        d = self.to_dict()
        defaults = _jsonable(T.TrainConfig(model=c.model, method=c.method).resolved().flat())
        flat = _jsonable(c.flat())
        own = set(method.Options.flat_defaults()) if method.Options is not None else set()
        for k, v in methods.name_pins().items():  # a default changed since runs were named
            defaults[k] = v
            if k not in own:
                flat[k] = v  # a filler of another method's option, not this run's choice
        d["config"] = {k: v for k, v in flat.items() if defaults.get(k) != v}
        net = models.network_name(c.model, c.model_kwargs)
        return f"{net}-{c.method}{rate}-s{c.seed}-{_digest(d)[:8]}"


def _jsonable(obj):
    """Tuples as lists, as JSON gives them back, so a spec equals its own round trip."""
    return json.loads(json.dumps(obj))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# --- the run record ----------------------------------------------------------------------------

def run_metrics(result, *, dataset: str, file_bytes: int, wall_seconds: float,
                backend: str | None = None, plan: dict | None = None,
                environment: dict | None = None) -> dict:
    """The metrics of one finished run (a `train.TrainResult`) as a JSON-ready dict;
    `environment`: where it ran (`environment.environment`)."""
    from minifreeze.models import network_name
    c = result.config
    shapes = result.model.param_shapes()
    total = result.model.num_params()
    trained = M.count_trained(shapes, result.masks)
    # a pruned network's kept weights that some path uses; a frozen one's are all connected
    pruned = result.masks is not None and c.mode == "prune"
    effective = M.effective(result.model, result.masks) if pruned else result.masks
    density = M.density_report(result.model, result.masks, effective)
    return {
        "model": c.model, "network": network_name(c.model, c.model_kwargs),
        "method": c.method, "score": c.score, "mode": c.mode, "rate": c.rate,
        "seed": c.seed, "init": c.init, "dataset": dataset, "backend": backend,
        "epochs": c.epochs, "test_accuracy": result.history[-1]["test_accuracy"],
        "total_params": total, "trained_params": trained, "compression": total / trained,
        "file_bytes": file_bytes, "dense_bytes": 4 * total, "wall_seconds": wall_seconds,
        "train_seconds": result.seconds, "plan": plan, "config": dataclasses.asdict(c),
        "history": result.history, "density": density,
        "trained_weights": sum(d["trained"] for d in density if d["name"].endswith(".w")),
        "effective_weights": sum(d.get("effective", d["trained"]) for d in density
                                 if d["name"].endswith(".w")),
        "environment": environment,
        "checkpoints": getattr(result, "checkpoints", None),
        "dead_units": getattr(result, "dead_units", None),
        "resumed_from": getattr(result, "resumed_from", None),
        "best_of_checkpoints": T.best_of_checkpoints(getattr(result, "checkpoints", None)),
    }


def seal(metrics: dict) -> dict:
    """metrics with "checksum", the SHA-256 of the rest (canonical JSON): an edit or a cut shows."""
    body = {k: v for k, v in metrics.items() if k != "checksum"}
    return {**body, "checksum": hashlib.sha256(json.dumps(body, sort_keys=True).encode())
            .hexdigest()}


def is_sealed(metrics) -> bool:
    """True when `metrics` carries a checksum that matches its contents."""
    return isinstance(metrics, dict) and "checksum" in metrics and \
        seal(metrics)["checksum"] == metrics["checksum"]


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


def train_any(config: T.TrainConfig, data: D.Dataset, *, progress: bool | None = None,
              state: T.StateFile | None = None):
    """Train any method: `train.train` (resuming from `state`, see `train.StateFile`), or the
    method's own `run` where it trains by itself (ELSA's phases: not resumable, run whole)."""
    method = methods.get(config.method)
    if method.trains_itself:
        return method.run(config, data, progress=progress)
    return T.train(config, data, progress=progress, state=state)


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
    if not is_sealed(metrics):
        return None
    if spec is not None:
        try:
            if RunSpec.from_dict(metrics["spec"]) != spec:
                return None
        except (KeyError, TypeError, ValueError):
            return None
    model = out / (LAST_GOOD if "diverged" in metrics else MODEL)
    sha = metrics.get("model_sha256")
    if sha is None:
        return None
    if not model.exists() and _left_out(out) == sha:  # published without its large model file
        return metrics
    if _file_sha256(model) != sha:
        return None
    return metrics


LEFT_OUT = "model_left_out.json"
"""Written by `publish` beside a run whose model file it did not copy: the file's name, size and
SHA-256, so that the run still counts as finished (a sweep resumed there does not redo it)."""


def _left_out(out: Path) -> str | None:
    try:
        return json.loads((out / LEFT_OUT).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None


def run(spec: RunSpec, out, *, data: D.Dataset | None = None, progress: bool | None = None,
        plan: dict | None = None, state_every: int = STATE_EVERY) -> dict:
    """Train one spec; write out/model.mfz, then out/metrics.json (both atomically); return the
    metrics. A run that diverges writes out/last_good.mfz and metrics that say where instead
    (`"diverged"`, no test accuracy) and returns them: it is finished too, since running it
    again would diverge again.

    While it trains, the run saves its whole training state to out/state.npz every
    `state_every` epochs (a whole number >= 1; it changes nothing in the result); a run of the
    same spec started again in `out` goes on from there (metrics record `resumed_from`, the
    epoch) and ends bit for bit as an uninterrupted run would. The state file is deleted once the
    metrics are written."""
    out = Path(out)
    state = T.StateFile(out / STATE, every=state_every, key=spec.name)  # checks it: nothing written
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).unlink(missing_ok=True)  # a redo is unfinished until its metrics are written
    c = spec.config.resolved()
    t0 = time.perf_counter()
    data = load_data(spec) if data is None else data
    try:
        result = train_any(c, data, progress=progress, state=state)
    except T.TrainingDiverged as err:
        metrics = _diverged(spec, out, err)
        (out / STATE).unlink(missing_ok=True)
        return metrics
    ckpt = result.checkpoint()
    ckpt.meta["dataset"] = spec.dataset
    file_bytes = storage.save(out / MODEL, ckpt)
    metrics = run_metrics(result, dataset=spec.dataset, file_bytes=file_bytes,
                                 wall_seconds=time.perf_counter() - t0,
                                 backend=backend.get_backend(), plan=plan,
                                 environment=run_environment(c))
    metrics.update(storage.stored_sizes(out / MODEL, result.params))  # the bytes, gzipped
    metrics.update(methods.get(c.method).record(result, data, out / MODEL))  # e.g. ELSA's levels
    metrics.update(run=out.name, spec=spec.to_dict(), model_sha256=_file_sha256(out / MODEL))
    metrics = seal(_jsonable(metrics))
    storage.write_atomic(out / METRICS, (json.dumps(metrics, indent=2) + "\n").encode())
    (out / STATE).unlink(missing_ok=True)
    return metrics


def run_environment(c: T.TrainConfig) -> dict:
    """Where a run of config `c` runs now: `environment.environment` with its shard count (None
    on a device-resident backend, whose trainer takes each batch whole)."""
    from minifreeze.lab.environment import environment
    model = models.get_model(c.model, **c.model_kwargs)
    shards = (None if backend.kernels().device_resident else
              parallel.resolve_shards(model, c.shards, c.batch_size))
    return environment(shards=shards, backend=backend.get_backend())


def _diverged(spec: RunSpec, out: Path, err: T.TrainingDiverged) -> dict:
    import math
    c = spec.config.resolved()
    masks, mode, rate = dict(err.masks or {}), c.mode, c.rate
    if methods.get(c.method).trains_itself:  # an ELSA phase: keep the values, not its masks
        masks, mode = {}, "prune"
    if masks:  # a gradual method may diverge between rates: record the rate its masks have
        kept, n = sum(int(m.sum()) for m in masks.values()), sum(m.size for m in masks.values())
        rate = rate if M.keep_count(n, rate) == kept else 1 - kept / n
    storage.save(out / LAST_GOOD, storage.Checkpoint(
        c.model, err.params, masks=masks, buffers=err.buffers,
        seed=methods.get(c.method).init_seed(c), init_scheme=c.init,
        mode=mode, meta={**T.checkpoint_meta(c), "rate": rate, "dataset": spec.dataset},
        model_kwargs=dict(c.model_kwargs)))
    loss = err.loss if math.isfinite(err.loss) else str(err.loss)  # JSON has no NaN
    metrics = seal(_jsonable({
        "model": c.model, "network": models.network_name(c.model, c.model_kwargs),
        "method": c.method, "rate": c.rate, "seed": c.seed,
        "dataset": spec.dataset, "run": out.name, "spec": spec.to_dict(),
        "environment": run_environment(c),
        "diverged": {"epoch": err.epoch, "step": err.step, "loss": loss, "why": err.why},
        "config": dataclasses.asdict(c), "history": err.history,
        "model_sha256": _file_sha256(out / LAST_GOOD)}))
    storage.write_atomic(out / METRICS, (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics


PUBLISH_MODEL_BYTES = 256 * 1024
"""`publish` copies a run's model file only up to this size (sparse runs: about 15 KB; a dense
LeNet-5 is 1.7 MB and is regenerated by running the spec again)."""


def publish(src, dst, *, max_model_bytes: int = PUBLISH_MODEL_BYTES) -> list[str]:
    """Copy every finished run of folder `src` into `dst` (a folder kept in version control):
    its metrics.json and, when at most `max_model_bytes`, its model file (model.mfz, or
    last_good.mfz for a diverged run); a larger one is named in `model_left_out.json` with its
    checksum, so the published run still counts as finished (`finished`). A run already in `dst` with the same checksum is left as
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
        if old is not None and old.get("checksum") == metrics["checksum"] and \
                finished(target) is not None:
            continue  # already there, whole
        target.mkdir(parents=True, exist_ok=True)
        model = folder / (LAST_GOOD if "diverged" in metrics else MODEL)
        if not model.exists():  # itself a published copy: its model named, not present
            storage.write_atomic(target / LEFT_OUT, (folder / LEFT_OUT).read_bytes())
        elif model.stat().st_size <= max_model_bytes:
            storage.write_atomic(target / model.name, model.read_bytes())
        else:
            storage.write_atomic(target / LEFT_OUT, (json.dumps(
                {"file": model.name, "bytes": model.stat().st_size,
                 "sha256": metrics["model_sha256"]}, indent=2) + "\n").encode())
        storage.write_atomic(target / METRICS, (folder / METRICS).read_bytes())
        copied.append(folder.name)
    return copied


PRICED = "storage_priced.json"
"""Written by `price` in a results folder: the stored sizes (`storage.stored_sizes`) of runs that
were recorded before runs measured them, computed afterwards from their committed model files.
`results.load_runs` adds them to those runs; the sealed metrics themselves are never rewritten."""


def priced_sizes(folder) -> dict[str, int]:
    """The stored sizes of the finished run in `folder`, computed from its model file as `run`
    computes them while it finishes (`storage.stored_sizes` of the file and of the parameters
    it rebuilds: frozen ones regenerated from the seed). Raises ValueError naming what is
    missing: an unfinished run, or one published without its model file."""
    folder = Path(folder)
    return _sizes(folder, finished(folder))


def _sizes(folder: Path, metrics: dict | None) -> dict[str, int]:
    """`priced_sizes` for a folder whose `finished` metrics are already read."""
    if metrics is None:
        raise ValueError(f"{folder}: not a finished run (no sealed {METRICS}, or its model file "
                         f"does not match the checksum it recorded)")
    if "diverged" in metrics:
        raise ValueError(f"{folder}: the run diverged; it has no trained network to price")
    if not (folder / MODEL).exists():
        raise ValueError(f"{folder}: its {MODEL} was not committed ({LEFT_OUT}); run the spec "
                         f"again to price it")
    return storage.stored_sizes(folder / MODEL, storage.load(folder / MODEL).params)


def price(root) -> tuple[list[str], dict[str, str]]:
    """Price every finished run of results folder `root` that recorded no stored sizes, from
    its model file (`priced_sizes`), into root/storage_priced.json (written atomically, sorted,
    each entry with the model file's SHA-256 so an entry never prices another file). Returns the
    runs priced and, for each run that could not be, why (e.g. a dense model left out)."""
    root = Path(root)
    priced, unpriced = {}, {}
    for folder in sorted(p.parent for p in root.glob(f"*/{METRICS}")):
        metrics = finished(folder)
        if metrics is not None and "gzip_bytes" in metrics:
            continue  # measured while it ran
        try:
            sizes = _sizes(folder, metrics)
        except (ValueError, storage.StorageError) as err:
            unpriced[folder.name] = str(err).removeprefix(f"{folder}: ")
            continue
        priced[folder.name] = {**sizes, "model_sha256": metrics["model_sha256"]}
    if priced:
        storage.write_atomic(root / PRICED, (json.dumps(priced, indent=2, sort_keys=True)
                                             + "\n").encode())
    return sorted(priced), unpriced
