"""The methods, by name: the one place that knows every method and every one-shot score.

A method is an object that owns what only it knows: the `TrainConfig` fields it reads beyond the
common ones (`option_fields`) and their checks, how it chooses its weights before training
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

from dataclasses import dataclass
from typing import Callable, ClassVar

from minifreeze import masks as M, saliency as S

__all__ = ["Dense", "Method", "OneShot", "REGISTRY", "SCORES", "Score", "get", "option_fields",
           "register", "register_score", "require"]


def require(ok: bool, what: str, expected: str, got) -> None:
    """ValueError "what: expected ..., got ..." unless `ok`: how a config field is refused."""
    if not ok:
        raise ValueError(f"{what}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class Score:
    """A one-shot selection: `select(model, theta0, data, config, buffers)` returns
    (scores or None, Masks) keeping round((1 - config.rate) N) weights."""
    name: str
    select: Callable
    about: str


@dataclass(frozen=True)
class Method:
    """What a method does with the weights. Subclasses fill in the parts that are theirs."""
    name: str
    about: str
    mode: str = "freeze"     # freeze (m == 0 held at theta0) or prune (m == 0 set to 0)
    score: str | None = None  # the one-shot score, if the method has one

    option_fields: ClassVar[tuple[str, ...]] = ()
    """The TrainConfig fields this kind of method may read beyond the common ones."""
    uses_rate: ClassVar[bool] = True
    """Whether config.rate means something (a run name carries it; a sweep runs every rate)."""
    overridable: ClassVar[bool] = False
    """Whether config.score and config.mode may override the method's own pair."""

    def options(self, config) -> tuple[str, ...]:
        """The option fields this config reads (the others are reset to their defaults)."""
        return self.option_fields

    def check(self, config) -> None:
        """Raise ValueError naming a bad option of a resolved config."""

    def select(self, model, theta0, data, config, buffers):
        """(scores, masks) chosen before training; (None, None): train unmasked from theta0."""
        return None, None

    def hooks(self, config, model) -> list:
        """The `trainer.Hook`s the method trains with."""
        return []

    trains_itself: ClassVar[bool] = False
    """True: `run` trains the whole method (ELSA's phases), where `train.train` cannot."""

    def run(self, config, data, *, progress: bool | None = None):
        """Train a method whose `trains_itself` is True (the others train with `train.train`)."""
        raise NotImplementedError(f"method {self.name} trains with train.train")

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


@dataclass(frozen=True)
class OneShot(Method):
    """One score on one batch at theta0, the top (1 - q) kept, the rest frozen or pruned."""
    overridable: ClassVar[bool] = True

    def check(self, config) -> None:
        require(config.score in SCORES, "score", f"one of {', '.join(SCORES)}", config.score)
        require(config.mode in M.MODES, "mode", f"one of {', '.join(M.MODES)}", config.mode)

    def select(self, model, theta0, data, config, buffers):
        return SCORES[config.score].select(model, theta0, data, config, buffers)


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
        register(OneShot(f"{score.name}_freeze", f"{score.about}, the rest frozen", "freeze",
                         score.name))
        register(OneShot(f"{score.name}_prune", f"{score.about}, the rest pruned", "prune",
                         score.name))
    return score


def get(name: str) -> Method:
    """The method called `name`, or a ValueError listing the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def option_fields() -> set[str]:
    """Every field some method owns: a method's config resets the ones it does not read."""
    return {f for m in REGISTRY.values() for f in type(m).option_fields}


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
