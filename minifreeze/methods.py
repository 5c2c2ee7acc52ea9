"""The methods, by name: the one place that knows every method and every one-shot score.

A method is an object that owns what only it knows: its own options (`Options`, a small
dataclass held in `TrainConfig.options`, e.g. `weightmom.Schedule`, `elsa.ElsaOptions`) and their
checks, how it chooses its weights before training
(`select`), the hooks it trains with (`hooks`), whether it trains whole by itself (`run`, ELSA's
phases) and how it is recorded (`mode`, `uses_rate`). The pipeline
(`train.py`), the runs, the sweep and the report ask this registry; none of them names a method.

    dense          `Dense`: no mask, every parameter trains
    freezenet ...  `OneShot(score, mode)`: one score at initialisation, then frozen or pruned
    weightmom, gmp `weightmom.Gradual`: pruned during training on a schedule
    elsa           `elsa.Elsa`: nested levels trained in phases

One-shot *scores* have their own registry (`SCORES`: snip, grad, magnitude, random here; synflow
and grasp in their modules): a score turns theta0 and the training data into masks, and
`register_score` adds it with its frozen and pruned method, so FreezeNet's "the same mask,
frozen or pruned" holds for every score. A new method is one module that calls `register` (or
`register_score`) once, and one import line in `minifreeze/__init__.py`, which imports every
method module so that the registry is whole whichever module a program imports first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping

import numpy as np

from minifreeze import masks as M, saliency as S

__all__ = ["Dense", "HEADLINE", "MaskVariant", "Method", "OneShot", "Options", "REGISTRY", "SCORES",
           "Score", "VARIANTS", "baseline", "documented", "get", "group_method",
           "option_defaults", "option_fields", "redrawn_seed", "register", "register_score",
           "require", "shuffle_within_layers", "variant_group"]


def documented(default, help: str, **argparse_kwargs):
    """A dataclass field with its default and what it means: `help` (shown by `--help`) and,
    for the command line, argparse's `choices` (a tuple, or a function giving one when the
    registry fills it later), `type`, `nargs`, `metavar`. Every field of `TrainConfig` and of a
    method's `Options` says what it means here, so a new method's options reach the command
    line with no table to edit."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


def require(ok: bool, what: str, expected: str, got) -> None:
    """ValueError "what: expected ..., got ..." unless `ok`: how a config field is refused."""
    if not ok:
        raise ValueError(f"{what}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class Score:
    """A one-shot selection: `select(model, theta0, data, config, buffers)` returns
    (scores or None, Masks) keeping round((1 - config.rate) N) weights; `keeps` says which end
    of the scores it keeps ("highest", or "lowest" for GraSP), so that the mask can be inverted."""
    name: str
    select: Callable
    about: str
    keeps: str = "highest"


@dataclass(frozen=True)
class Method:
    """What a method does with the weights. Subclasses fill in the parts that are theirs."""
    name: str
    about: str
    mode: str = "freeze"     # freeze (m == 0 held at theta0) or prune (m == 0 set to 0)
    score: str | None = None  # the one-shot score, if the method has one

    Options: ClassVar[type | None] = None
    """The dataclass of this kind of method's own options (an `Options` subclass), held in
    `TrainConfig.options`; None: the method has none beyond the common fields."""
    uses_rate: ClassVar[bool] = True
    """Whether config.rate means something (a run name carries it; a sweep runs every rate)."""
    overridable: ClassVar[bool] = False
    """Whether config.score and config.mode may override the method's own pair."""
    baseline: ClassVar[bool] = False
    """Whether this is the network every sparse one is measured against (dense): its runs are
    not paired with a sparse network's by seed, a sweep always includes it, figures draw it as
    a reference line."""
    gradual: ClassVar[bool] = False
    """Whether the rate is reached during training (weightmom, gmp): the report draws its
    schedule."""

    def options_from(self, values: Mapping | None, *, strict: bool = False):
        """This method's options from flat values by field name (the command line's flags, or
        the config of a run recorded before options were nested), each missing one at its
        default; None for a method without options. `strict`: a name the options do not have
        is an error, not ignored."""
        return None if self.Options is None else self.Options.from_flat(values or {}, strict=strict)

    def resolve_options(self, options):
        """The options a config of this method runs with: `options` as given (an instance of
        `Options`, or a mapping of its fields), the defaults for None; ValueError for a method
        without options given some, or options of another method."""
        if self.Options is None:
            require(options is None or options == {}, "options",
                    f"none (method {self.name} has no options of its own)", options)
            return None
        if options is None:
            return self.Options()
        if isinstance(options, Mapping):
            return self.Options.from_flat(options, strict=True)
        require(isinstance(options, self.Options), "options",
                f"{self.Options.__name__} (method {self.name}'s), or a mapping of its fields",
                type(options).__name__)
        return options

    def check(self, config) -> None:
        """Raise ValueError naming a bad option of a resolved config."""

    def select(self, model, theta0, data, config, buffers):
        """(scores, masks) chosen before training; (None, None): train unmasked from theta0."""
        return None, None

    def hooks(self, config, model) -> list:
        """The `trainer.Hook`s the method trains with."""
        return []

    def init_seed(self, config) -> int:
        """The seed the training starts from: theta0 of config.seed, unless the method re-draws it
        (a sanity check's `redrawn` mask). The seed a saved file regenerates frozen weights from."""
        return config.seed

    trains_itself: ClassVar[bool] = False
    """True: `run` trains the whole method (ELSA's phases), where `train.train` cannot."""

    def run(self, config, data, *, progress: bool | None = None):
        """Train a method whose `trains_itself` is True (the others train with `train.train`)."""
        raise NotImplementedError(f"method {self.name} trains with train.train")

    def record(self, result, data, path) -> dict:
        """What a run of this method records beyond every run's metrics (`lab.runs.run_metrics`),
        from its result, its data and its model file as written at `path`: {} for most; ELSA's
        levels, each extracted and tested."""
        return {}

    def group(self, config: dict) -> str:
        """The name a run's row is grouped under in the report, from its recorded config (a
        dict, as metrics.json holds it): runs of one group are averaged over seeds."""
        return self.name

    @property
    def pruned(self) -> bool:
        """Whether the network the method ends with is pruned (the report compares like with
        like): a pruned mask chosen at the start or during training."""
        return self.mode == "prune" and self.uses_rate

    @property
    def mask_key(self) -> str:
        """Methods with the same mask share it (FreezeNet and SNIP: the score)."""
        return self.score or self.name


@dataclass(frozen=True)
class Dense(Method):
    """No mask: every parameter trains (recorded as mode freeze with every m = 1)."""
    uses_rate: ClassVar[bool] = False
    baseline: ClassVar[bool] = True


REGISTRY: dict[str, Method] = {}
"""Every method, by name, in the order tables and legends list them."""

SCORES: dict[str, Score] = {}
"""Every one-shot score, by name."""


def register(method: Method) -> Method:
    """Add a method; its name must be new."""
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is registered already")
    REGISTRY[method.name] = method
    return method


def register_score(score: Score, *, methods: bool = True) -> Score:
    """Add a one-shot score and, with `methods`, its two methods: `<score>_freeze` (the rest
    frozen at theta0) and `<score>_prune` (the rest pruned to 0)."""
    if score.name in SCORES:
        raise ValueError(f"score {score.name!r} is registered already")
    SCORES[score.name] = score
    if methods:
        register_score_methods(score.name)
    return score


def register_score_methods(name: str) -> None:
    """Register the frozen and the pruned method of score `name`: `<name>_freeze`, `<name>_prune`."""
    about = SCORES[name].about
    register(OneShot(f"{name}_freeze", f"{about}, the rest frozen", "freeze", name))
    register(OneShot(f"{name}_prune", f"{about}, the rest pruned", "prune", name))


def get(name: str) -> Method:
    """The method called `name`, or a ValueError listing the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


HEADLINE = ("freezenet", "snip")
"""The comparison the project is about, the default of every report's `compare`: the same mask,
frozen (FreezeNet) against pruned (SNIP)."""


def baseline() -> str:
    """The name of the baseline method (`Method.baseline`: dense)."""
    return next(m.name for m in REGISTRY.values() if m.baseline)


def option_fields() -> dict:
    """Every option some method has, flat, as its dataclass field (`Options.flat_fields`): the
    default, and the help and argparse settings in its metadata (`documented`)."""
    out: dict = {}
    for m in REGISTRY.values():
        if m.Options is not None:
            for k, f in m.Options.flat_fields().items():
                out.setdefault(k, f)
    return out


def option_defaults() -> dict:
    """Every option some method has, flat (by field name, a nested option's fields spread out),
    at its default, in registry order: the command line's option flags, and the fields a run's
    name hashes (`TrainConfig.flat`)."""
    return {k: f.default for k, f in option_fields().items()}


@dataclass(frozen=True)
class Options:
    """Base of a method's options: a small frozen dataclass nested in `TrainConfig.options`.
    `flat()` spreads it into {field: value} (nested options' fields too); `from_flat` reads
    that form back, ignoring other names unless `strict`."""

    @classmethod
    def from_flat(cls, values: Mapping, *, strict: bool = False) -> "Options":
        names = [f.name for f in dataclasses.fields(cls)]
        if strict:
            unknown = sorted(set(values) - set(names) - set(cls.flat_defaults()))
            require(not unknown, "options", f"fields of {cls.__name__} ({', '.join(names)})",
                    unknown)
        return cls(**{k: values[k] for k in names if k in values})

    def flat(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def flat_defaults(cls) -> dict:
        """Every flat field this kind of options may have, at its default."""
        return cls().flat()

    @classmethod
    def flat_fields(cls) -> dict:
        """Every flat field this kind of options may have, as its `dataclasses.Field`."""
        return {f.name: f for f in dataclasses.fields(cls)}

    NAME_PINS: ClassVar[dict] = {}
    """{field: value}: the default a run's name hashes a field against, where the default changed
    after runs were named (`runs.RunSpec.name`), so that changing a default renames no finished
    run and never gives a new run an old run's name."""


def name_pins() -> dict:
    """Every registered method's `Options.NAME_PINS`, flat."""
    out: dict = {}
    for m in REGISTRY.values():
        if m.Options is not None:
            out.update(m.Options.NAME_PINS)
    return out


# --- one-shot methods, and the sanity checks of their masks --------------------------------------

VARIANTS = ("chosen", "shuffled", "redrawn", "inverted")
"""The sanity checks of Frankle et al. ("Pruning neural networks at initialization: why are we
missing the mark?", ICLR 2021), for frozen and pruned networks alike: the mask as the score
chose it; shuffled within each layer (the same count per layer, `shuffle_within_layers`); as
chosen but trained from theta0 re-drawn from another seed (`redrawn_seed`: for a frozen network
the frozen values change too); inverted (the weights the score ranks lowest kept, as many per
scope; ties broken by position)."""


def redrawn_seed(seed: int) -> int:
    """The seed a `redrawn` mask's theta0 comes from: seed + 1000 (mod 2^32)."""
    return (seed + 1000) % 2 ** 32


def variant_group(name: str, variant: str) -> str:
    """The report's group of method `name`'s runs with mask variant `variant`: the name itself for
    the mask as chosen, `<name>_<variant>` for a sanity check (`freezenet_shuffled`), so that a
    variant is never averaged with the mask as chosen."""
    return name if variant == "chosen" else f"{name}_{variant}"


def group_method(group: str) -> "Method | None":
    """The registered method whose runs a report group holds (the inverse of `variant_group`):
    `freezenet_shuffled` -> freezenet; None for a group outside the registry (`elsa_gmp`)."""
    if group in REGISTRY:
        return REGISTRY[group]
    name, _, variant = group.rpartition("_")
    return REGISTRY.get(name) if variant in VARIANTS and variant != "chosen" else None


def shuffle_within_layers(masks, seed) -> M.Masks:
    """Each layer's mask with its entries permuted by a generator keyed on `seed`: the same
    number kept in every layer, placed at random."""
    rng = np.random.default_rng(seed)
    return M.Masks({k: rng.permutation(m.ravel()).reshape(m.shape) for k, m in masks.items()})


@dataclass(frozen=True)
class MaskVariant(Options):
    """A one-shot method's option: which variant of its mask trains (`VARIANTS`)."""
    variant: str = documented("chosen", "one-shot methods: the mask as chosen, shuffled within "
                              "each layer, trained from theta0 re-drawn from seed + 1000, or "
                              "inverted (the lowest-ranked kept): Frankle et al.'s sanity checks",
                              choices=VARIANTS)


@dataclass(frozen=True)
class OneShot(Method):
    """One score on one batch at theta0, the top (1 - q) kept, the rest frozen or pruned; with
    option `variant`, one of Frankle et al.'s sanity checks of that mask (`VARIANTS`)."""
    overridable: ClassVar[bool] = True
    Options: ClassVar[type] = MaskVariant

    def check(self, config) -> None:
        require(config.score in SCORES, "score", f"one of {', '.join(SCORES)}", config.score)
        require(config.mode in M.MODES, "mode", f"one of {', '.join(M.MODES)}", config.mode)
        require(config.options.variant in VARIANTS, "variant", f"one of {', '.join(VARIANTS)}",
                config.options.variant)

    def select(self, model, theta0, data, config, buffers):
        score = SCORES[config.score]
        scores, masks = score.select(model, theta0, data, config, buffers)
        variant = config.options.variant
        if variant == "shuffled":
            masks = shuffle_within_layers(masks, [config.seed, 5])
        elif variant == "inverted":
            if scores is None:
                raise ValueError(f"variant inverted: score {config.score} gives no scores to "
                                 f"invert")
            sign = -1 if score.keeps == "highest" else 1
            masks = M.select_topk({k: sign * v for k, v in scores.items()}, config.rate,
                                  scope=config.scope)
        return scores, masks

    def init_seed(self, config) -> int:
        return redrawn_seed(config.seed) if config.options.variant == "redrawn" else config.seed

    def group(self, config: dict) -> str:
        """The method's name, and `_<variant>` for a sanity check's variant (`shuffled`, ...):
        a variant is never averaged with the mask as chosen."""
        return variant_group(self.name, (config.get("options") or {}).get("variant", "chosen"))


# --- the methods of SNIP and FreezeNet: saliency scores from saliency.py -------------------------

def saliency_select(model, theta0, data, config, buffers):
    """SNIP's recipe for any score of saliency.py: one batch of `config.saliency_batch` training
    images (`saliency.saliency_batch`, keyed on the seed), scores, the global or per-layer top
    (1 - q)."""
    x, y = S.saliency_batch(data, config.saliency_batch, config.seed)
    scores = S.saliency(model, theta0, x, y, score=config.score,
                        include_biases=config.include_biases, seed=[config.seed, 3],
                        buffers=buffers)
    return scores, M.select_topk(scores, config.rate, scope=config.scope)


register(Dense("dense", "every parameter trains"))
register_score(Score("snip", saliency_select, "SNIP's |theta * g|"), methods=False)
register(OneShot("freezenet", "FreezeNet: SNIP's |theta * g| selects, the rest stay frozen at "
                 "theta0", "freeze", "snip"))
register(OneShot("snip", "SNIP: |theta * g| selects, the rest are pruned to 0", "prune", "snip"))
register_score(Score("grad", saliency_select, "|g| selects (the other reading of FreezeNet's "
                     "score)"))
register_score(Score("random", saliency_select, "a random mask"))
register_score(Score("magnitude", saliency_select, "|theta0| selects"), methods=False)
