"""The registry: every method is one object there, the pipeline names none, and a new method or
score is one module and one registry line (SynFlow and GraSP are the proof; a toy score here)."""

import ast
import dataclasses
import json
import typing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minifreeze import methods, storage
from minifreeze.lab import figures, pages, results, sweep, tables
from minifreeze.data import limit_train, load_dataset
from minifreeze.train import METHODS, TrainConfig, prepare, train

PACKAGE = Path(__file__).resolve().parent.parent / "minifreeze"
METHOD_FREE = ("train", "trainer", "parallel", "lab/runs", "lab/sweep", "lab/cli", "lab/results",
               "lab/tables", "lab/figures", "lab/pages")
"""Modules that ask the registry and compare with no method's name (the lab: not even dense's,
`Method.baseline` says which is the baseline)."""
"""Modules that must not compare anything with a method's name."""


@pytest.fixture(scope="module")
def small():
    mnist = load_dataset("mnist")
    return replace(limit_train(mnist, 300), x_test=mnist.x_test[:200], y_test=mnist.y_test[:200])


def test_registry_holds_every_method_in_table_order():
    assert METHODS is methods.REGISTRY
    assert list(METHODS)[:10] == ["dense", "freezenet", "snip", "grad_freeze", "grad_prune",
                                  "random_freeze", "random_prune", "weightmom", "gmp", "elsa"]
    assert {"synflow_freeze", "synflow_prune", "grasp_freeze", "grasp_prune"} <= set(METHODS)
    for name, m in METHODS.items():
        assert m.name == name
        c = TrainConfig(method=name, rate=0.99).resolved()  # every method resolves its defaults
        assert c.mode in ("freeze", "prune")
        assert (c.rate == 0.99) == m.uses_rate


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'snipp'; expected one of dense, "):
        TrainConfig(method="snipp").resolved()
    with pytest.raises(ValueError, match="score: expected one of snip, grad, random"):
        TrainConfig(method="freezenet", score="hessian").resolved()
    with pytest.raises(ValueError, match="registered already"):
        methods.register(methods.Dense("dense", "again"))


def test_a_method_without_a_score_refuses_one():
    with pytest.raises(ValueError, match="method weightmom has no one-shot score"):
        TrainConfig(method="weightmom", score="grad").resolved()


def test_each_method_owns_its_options_nested_in_the_config():
    from minifreeze.elsa import ElsaOptions
    from minifreeze.weightmom import Schedule
    assert TrainConfig(method="freezenet").resolved().options == methods.MaskVariant("chosen")
    assert TrainConfig(method="dense").resolved().options is None
    with pytest.raises(ValueError, match="options: expected none \\(method dense has no options"):
        TrainConfig(method="dense", options={"prune_every": 7}).resolved()
    with pytest.raises(ValueError, match="options: expected fields of MaskVariant"):
        TrainConfig(method="freezenet", options={"prune_every": 7}).resolved()
    g = TrainConfig(method="gmp", options={"prune_every": 7}).resolved()
    assert g.options == Schedule(prune_every=7)
    with pytest.raises(ValueError, match="options: expected fields of Schedule"):
        TrainConfig(method="gmp", options={"levels": (0.9,)}).resolved()
    with pytest.raises(ValueError, match="options: expected ElsaOptions"):
        TrainConfig(method="elsa", options=Schedule()).resolved()
    e = TrainConfig(method="elsa", options=ElsaOptions(levels=(0.9,), sparsifier="snip",
                                                       gradual=Schedule(prune_every=7))).resolved()
    assert e.options.levels == (0.9,) and e.options.gradual is None  # snip sparsifier: no schedule
    e = TrainConfig(method="elsa", options=ElsaOptions(levels=(0.9,))).resolved()
    assert e.options.sparsifier == "gmp" and e.options.gradual == Schedule()  # the default
    e = TrainConfig(method="elsa", options={"levels": [0.9], "sparsifier": "gmp", "prune_every": 7}).resolved()
    assert e.options == ElsaOptions(levels=(0.9,), sparsifier="gmp", gradual=Schedule(prune_every=7))


def test_a_config_reads_back_from_both_its_recorded_forms():
    """Nested (`dataclasses.asdict`, as runs record it now) and flat (`TrainConfig.flat`, as runs
    recorded before options were nested): the same config, and the same run name."""
    from minifreeze.lab.runs import RunSpec
    for c in (TrainConfig(method="elsa", options={"levels": [0.99, 0.9], "sparsifier": "gmp",
                                                  "mom_beta": 0.5}),
              TrainConfig(method="weightmom", options={"prune_every": 3}),
              TrainConfig(method="snip", rate=0.99)):
        c = c.resolved()
        for form in (dataclasses.asdict(c), c.flat()):
            back = TrainConfig.from_dict(json.loads(json.dumps(form))).resolved()
            assert back == c and RunSpec(back).name == RunSpec(c).name
    assert "prune_every" in TrainConfig().flat() and "levels" in TrainConfig().flat()


def _compared_strings(module: str) -> list[str]:
    """String literals compared with == / != / in inside `module`'s source."""
    out = []
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                for sub in ast.walk(part):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        out.append(sub.value)
    return out


@pytest.mark.parametrize("module", METHOD_FREE)
def test_the_pipeline_names_no_method(module):
    names = set(METHODS) if module.startswith("lab/") else set(METHODS) - {"dense"}
    named = sorted(set(_compared_strings(module)) & names)
    assert not named, f"{module}.py compares with method names {named}: ask the registry"


@pytest.mark.parametrize("score", ["synflow", "grasp"])
def test_new_scores_train_frozen_and_pruned_with_the_same_mask(small, score):
    """The new scores land as one module and one registry line: each trains end to end,
    frozen weights bit for bit theta0, pruned weights 0, both from one mask."""
    base = TrainConfig(model="lenet5", rate=0.99, epochs=1, seed=4, lr=0.05)
    frozen = train(replace(base, method=f"{score}_freeze"), small, progress=False)
    pruned = train(replace(base, method=f"{score}_prune"), small, progress=False)
    n = sum(m.size for m in frozen.masks.values())
    assert sum(int(m.sum()) for m in frozen.masks.values()) == round(0.01 * n)
    for k, m in frozen.masks.items():
        assert np.array_equal(m, pruned.masks[k])
        off = m == 0
        assert np.array_equal(frozen.params[k][off].view(np.uint32),
                              frozen.theta0[k][off].view(np.uint32))
        assert (pruned.params[k][off] == 0).all()
    assert frozen.history[0]["test_accuracy"] > 0.1  # it learned something in one epoch


def test_a_toy_score_is_one_registry_line(small, tmp_path, monkeypatch):
    """A score registered from outside the package (here: the largest |theta0| in each layer's
    first half) trains, sweeps, is stored and is reported, and nothing else had to change."""
    monkeypatch.setattr(methods, "REGISTRY", dict(methods.REGISTRY))
    monkeypatch.setattr(methods, "SCORES", dict(methods.SCORES))
    import minifreeze.train as T
    monkeypatch.setattr(T, "METHODS", methods.REGISTRY)
    for lab in (results, figures, tables, pages):
        if hasattr(lab, "REGISTRY"):
            monkeypatch.setattr(lab, "REGISTRY", methods.REGISTRY)

    def select(model, theta0, data, config, buffers):
        s = {k: np.abs(theta0[k]) for k in model.weight_names()}
        return s, methods.M.select_topk(s, config.rate, scope=config.scope)

    methods.register_score(methods.Score("toy", select, "|theta0| selects"))
    assert methods.get("toy_prune").pruned and not methods.get("toy_freeze").pruned
    base = TrainConfig(model="lenet300", epochs=1, lr=0.05, shards=1)
    result = sweep.sweep(sweep.expand_grid(["lenet300"], ["toy_freeze", "toy_prune"], [0.9], [0],
                                           base=base, limit_train=300, limit_test=200),
                         tmp_path, progress=False)  # a thread of this process: sees the registry
    assert result.ran == 3 and not result.failed
    runs = results.load_runs(tmp_path)
    assert [r["method"] for r in runs] == ["dense", "toy_freeze", "toy_prune"]
    back = storage.load(next(tmp_path.glob("lenet300-toy_prune-*")) / "model.mfz")
    assert back.mode == "prune"
    assert figures.method_style("toy_freeze")["color"] == figures.method_style("toy_prune")["color"]
    setup = prepare(replace(base, method="toy_freeze", rate=0.9), small)
    assert setup.scores is not None and setup.masks is not None


def _run(method, seed, acc, kept):
    """A run's metrics as the report reads them: `kept` weights per masked layer of 100."""
    density = [{"name": n, "shape": [100], "total": 100, "trained": k, "density": k / 100,
                "rate": 1 - k / 100, "masked": True} for n, k in kept.items()]
    return {"model": "lenet300", "method": method, "rate": 0.99, "seed": seed,
            "test_accuracy": acc, "trained_params": 10, "compression": 2.0, "file_bytes": 100,
            "epochs": 1, "train_seconds": 1.0, "run": f"{method}-{seed}", "config": {},
            "density": density}


def test_report_pairs_every_mask_frozen_against_pruned_and_counts_emptied_layers():
    runs = [_run(m, s, acc + 0.01 * s, {"fc1.w": k, "fc2.w": 5})
            for m, acc, k in (("freezenet", 0.9, 3), ("snip", 0.5, 3), ("synflow_freeze", 0.8, 2),
                              ("synflow_prune", 0.7, 2), ("grasp_prune", 0.6, 0))
            for s in (0, 1)]
    groups = results.aggregate(runs)
    assert results.freeze_prune_pairs(groups) == [("freezenet", "snip"),
                                                 ("synflow_freeze", "synflow_prune")]
    assert results.against_pruned_pairs(groups) == [("freezenet", "snip"),
                                                   ("freezenet", "synflow_prune"),
                                                   ("freezenet", "grasp_prune")]
    rows = results.pair_rows(groups, results.freeze_prune_pairs(groups))
    assert [(r["a"], r["b"]) for r in rows] == [("freezenet", "snip"),
                                                ("synflow_freeze", "synflow_prune")]
    assert rows[1]["difference"] == pytest.approx(0.1) and rows[1]["verdict"] == "a above"
    layers = {r["method"]: r for r in results.layer_rows(runs)}
    assert layers["grasp_prune"]["emptied"] == ["fc1.w"] and not layers["snip"]["emptied"]
    assert layers["freezenet"]["kept"] == {"fc1.w": 3.0, "fc2.w": 5.0}
    text = tables.layers_markdown(results.layer_rows(runs))
    assert "| grasp_prune | 0.99 | 2 | 0 (0!) | 5 (5) |" in text
    md = pages.report_markdown(runs, groups, [], frozen_pruned=rows,
                                against_pruned=results.pair_rows(
                                    groups, results.against_pruned_pairs(groups)),
                                layers=results.layer_rows(runs))
    assert "frozen (a) against pruned (b)" in md and "FreezeNet (a) against each pruned" in md


@dataclasses.dataclass(frozen=True)
class _EveryNth(methods.Options):
    keep_every: int = methods.documented(3, "toy: score every N-th weight of a layer highest",
                                         metavar="N")


@dataclasses.dataclass(frozen=True)
class _Toy(methods.Method):
    """A method with an option of its own, declared only here."""
    Options: typing.ClassVar[type] = _EveryNth

    def select(self, model, theta0, data, config, buffers):
        n = config.options.keep_every
        scores = {k: ((np.arange(theta0[k].size) % n == 0) +
                      np.abs(theta0[k]).ravel() * 1e-3).reshape(theta0[k].shape)
                  for k in model.weight_names()}
        return scores, methods.M.select_topk(scores, config.rate, scope=config.scope)


def test_a_method_with_an_option_is_one_module(monkeypatch, tmp_path, capsys):
    """Registering a method whose option is documented on its dataclass field is all it takes:
    `train --help` lists the flag with its help, and `train --keep-every 5` records it."""
    from minifreeze.lab.cli import main
    monkeypatch.setitem(methods.REGISTRY, "toy_nth", _Toy("toy_nth", "every N-th weight",
                                                        "freeze"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--keep-every N toy: score every N-th weight of a layer highest (default 3)" in help_text
    assert main(["train", "--model", "lenet300", "--method", "toy_nth", "--keep-every", "5",
                 "--rate", "0.9", "--epochs", "1", "--limit-train", "300", "--limit-test", "200",
                 "--shards", "1", "--out", str(tmp_path / "toy")]) == 0
    metrics = json.loads((tmp_path / "toy" / "metrics.json").read_text())
    assert metrics["method"] == "toy_nth" and metrics["config"]["options"] == {"keep_every": 5}
    assert metrics["trained_params"] < metrics["total_params"]


def test_the_sanity_checks_of_a_mask(small, tmp_path):
    """Frankle et al.'s variants of one mask: shuffled keeps each layer's count at other places;
    inverted keeps the lowest-ranked (disjoint from the chosen at q = 0.99; GraSP, which keeps its
    lowest scores, inverts the other way); redrawn keeps the chosen mask and starts from theta0
    of seed + 1000, frozen values too, and its file regenerates them from that seed."""
    from minifreeze import init
    base = TrainConfig(model="lenet300", method="freezenet", rate=0.99, seed=2, epochs=1)
    setups = {v: prepare(replace(base, options={"variant": v}), small)
              for v in methods.VARIANTS}
    chosen = setups["chosen"]
    for k, m in chosen.masks.items():
        assert setups["shuffled"].masks[k].sum() == m.sum()
        assert not np.array_equal(setups["shuffled"].masks[k], m)
        assert (setups["inverted"].masks[k] * m).sum() == 0
        assert np.array_equal(setups["redrawn"].masks[k], m)
    redrawn = init.init_params(chosen.model, methods.redrawn_seed(2), "xavier")
    for k, v in setups["redrawn"].params.items():
        assert np.array_equal(v, redrawn[k])
        assert k.endswith(".b") or not np.array_equal(v, chosen.theta0[k])  # biases start at 0
    grasp = TrainConfig(model="lenet300", method="grasp_prune", rate=0.99, seed=2, epochs=1)
    g, gi = (prepare(replace(grasp, options={"variant": v}), small) for v in ("chosen", "inverted"))
    order = {k: np.argsort(g.scores[k].ravel()) for k in g.scores}  # GraSP keeps the lowest
    assert all((gi.masks[k] * g.masks[k]).sum() == 0 for k in g.masks)
    top = max(g.scores["fc1.w"].ravel()[gi.masks["fc1.w"].ravel() == 1])
    assert top == g.scores["fc1.w"].ravel()[order["fc1.w"][-1]]
    result = train(replace(base, options={"variant": "redrawn"}), small, progress=False)
    storage.save(tmp_path / "r.mfz", result.checkpoint())
    back = storage.load(tmp_path / "r.mfz")
    assert back.seed == methods.redrawn_seed(2)
    for k, m in back.masks.items():
        assert np.array_equal(back.params[k][m == 0], redrawn[k][m == 0])
    assert methods.get("freezenet").group({"options": {"variant": "shuffled"}}) == \
        "freezenet_shuffled"
    with pytest.raises(ValueError, match="variant: expected one of chosen"):
        TrainConfig(method="snip", options={"variant": "reversed"}).resolved()


def test_report_pairs_each_sanity_variant_frozen_against_pruned():
    """A variant's runs are grouped apart (freezenet_shuffled) and paired with the same variant
    pruned, by seed; never with the mask as chosen."""
    runs = []
    for variant, fz, sn in (("chosen", 0.90, 0.80), ("shuffled", 0.70, 0.60)):
        for m, acc in (("freezenet", fz), ("snip", sn)):
            for s in (0, 1, 2):
                r = _run(m, s, acc + 0.01 * s, {"fc1.w": 3})
                r["config"] = {"options": {"variant": variant}}
                runs.append(r)
    groups = results.aggregate(runs)
    assert {g["method"] for g in groups} == {"freezenet", "snip", "freezenet_shuffled",
                                             "snip_shuffled"}
    assert results.freeze_prune_pairs(groups) == [("freezenet", "snip"),
                                                 ("freezenet_shuffled", "snip_shuffled")]
    rows = results.pair_rows(groups, results.freeze_prune_pairs(groups))
    assert [(r["a"], round(r["difference"], 6)) for r in rows] == [
        ("freezenet", 0.1), ("freezenet_shuffled", 0.1)]
