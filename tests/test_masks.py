"""Masks: exact counts, deterministic ties, per-layer scope, freeze vs prune, compression."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minifreeze import init, masks as M
from minifreeze.models import get_model

from .strategies import rng_from, seeds

rates = st.floats(0.0, 0.999, allow_nan=False)


def _scores(seed, shapes, ties):
    rng = rng_from(seed)
    if ties:  # few distinct values: many ties
        return {f"t{i}.w": rng.integers(0, 3, s).astype(np.float32) for i, s in enumerate(shapes)}
    return {f"t{i}.w": rng.random(s, dtype=np.float32) for i, s in enumerate(shapes)}


shapes = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4)


@given(seeds, shapes, rates, st.booleans())
def test_global_topk_keeps_exact_count_and_is_deterministic(seed, shapes, rate, ties):
    scores = _scores(seed, shapes, ties)
    m = M.select_topk(scores, rate)
    n = sum(s.size for s in scores.values())
    kept = sum(int(v.sum()) for v in m.values())
    assert kept == M.keep_count(n, rate) and abs(kept - (1 - rate) * n) <= 0.5 + 1e-9
    assert all(v.dtype == np.float32 and v.shape == scores[k].shape for k, v in m.items())
    again = M.select_topk({k: v.copy() for k, v in scores.items()}, rate)
    assert all(np.array_equal(m[k], again[k]) for k in m)
    # every kept score >= every dropped score
    flat_s = np.concatenate([s.ravel() for s in scores.values()])
    flat_m = np.concatenate([v.ravel() for v in m.values()])
    if 0 < flat_m.sum() < flat_m.size:
        assert flat_s[flat_m == 1].min() >= flat_s[flat_m == 0].max()


@given(seeds, shapes, rates)
def test_layer_scope_keeps_exact_count_per_tensor(seed, shapes, rate):
    scores = _scores(seed, shapes, False)
    m = M.select_topk(scores, rate, scope="layer")
    for k, v in m.items():
        assert int(v.sum()) == M.keep_count(v.size, rate)


def test_ties_go_to_the_first_positions():
    m = M.select_topk({"a.w": np.ones(4, np.float32), "b.w": np.ones(4, np.float32)}, 0.5)
    assert m["a.w"].tolist() == [1, 1, 1, 1] and m["b.w"].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("rate", [-0.1, 1.0, 2, "x", float("nan")])
def test_bad_rate_is_a_clear_error(rate):
    with pytest.raises(ValueError, match=r"rate: expected a number in \[0, 1\)"):
        M.select_topk({"a.w": np.ones(3)}, rate)


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="a.w contain NaN"):
        M.select_topk({"a.w": np.array([1.0, np.nan])}, 0.5)


def test_freeze_keeps_theta0_prune_zeros_the_rest():
    model = get_model("lenet300")
    theta0 = init.init_params(model, 3)
    scores = {k: np.abs(theta0[k]) for k in model.weight_names()}
    m = M.select_topk(scores, 0.9)
    frozen = M.apply_mode(theta0, m, "freeze")
    pruned = M.apply_mode(theta0, m, "prune")
    for k in theta0:
        assert np.array_equal(frozen[k], theta0[k]) and frozen[k] is not theta0[k]
    for k, v in m.items():
        assert np.array_equal(pruned[k][v == 1], theta0[k][v == 1])
        assert (pruned[k][v == 0] == 0).all() and not np.signbit(pruned[k][v == 0]).any()
    with pytest.raises(ValueError, match="unknown mode 'drop'"):
        M.apply_mode(theta0, m, "drop")


def test_lenet5_compression_at_q_0995_is_157_8():
    model = get_model("lenet5")
    shapes = model.param_shapes()
    scores = {k: np.arange(np.prod(shapes[k]), dtype=np.float32).reshape(shapes[k])
              for k in model.weight_names()}
    m = M.select_topk(scores, 0.995)
    # exact decimal arithmetic: round(2152.5) = 2152 (half to even), not float64's 2152.50...02
    assert M.keep_count(430_500, 0.995) == 2152
    assert M.count_trained(shapes, m) == 2152 + 580
    assert round(M.compression(shapes, m), 1) == 157.8
    rows = M.density_report(model, m)
    assert [r["name"] for r in rows] == list(shapes)
    assert all(r["density"] == 1.0 for r in rows if not r["masked"])


def test_overlap_is_one_for_the_same_mask_and_counts_shared_kept_entries():
    a = {"l1.w": np.array([1, 1, 0, 0], np.float32), "l2.w": np.array([[1, 0], [0, 0]], np.float32)}
    b = {"l1.w": np.array([1, 0, 1, 0], np.float32), "l2.w": np.array([[1, 0], [0, 1]], np.float32)}
    assert M.overlap(a, a) == 1.0
    assert M.overlap(a, b) == 2 / 3  # kept in a: 3; also kept in b: l1.w[0] and l2.w[0, 0]
    with pytest.raises(ValueError, match="no tensor of the same shape for \\['l2.w'\\]"):
        M.overlap(a, {"l1.w": b["l1.w"]})
    with pytest.raises(ValueError, match="keeps no entry"):
        M.overlap({"l1.w": np.zeros(4, np.float32)}, b)


# --- effective sparsity: kept weights that some input-to-output path uses ----------------------

def _mlp(widths):
    from minifreeze.models import Layer, Model
    layers = [Layer("flat", "flatten")]
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers += [Layer(f"fc{i + 1}", "linear", {"in": a, "out": b}), Layer(f"r{i + 1}", "relu")]
    return Model("mlp", (widths[0], 1, 1), tuple(layers[:-1]))


def _paths_reference(masks, widths):
    """Each kept weight that lies on some input-to-output path, by enumerating every path."""
    import itertools
    used = {k: np.zeros_like(m) for k, m in masks.items()}
    for path in itertools.product(*(range(w) for w in widths)):
        steps = [(f"fc{i + 1}.w", path[i + 1], path[i]) for i in range(len(widths) - 1)]
        if all(masks[k][o, j] for k, o, j in steps):
            for k, o, j in steps:
                used[k][o, j] = 1
    return used


def test_effective_drops_weights_no_path_uses():
    """Hand-made: hidden unit 0 has no kept input, hidden unit 2 no kept output."""
    model = _mlp([2, 3, 2])
    masks = {"fc1.w": np.array([[0, 0], [1, 0], [1, 1]], np.float32),   # (3, 2)
             "fc2.w": np.array([[1, 1, 0], [0, 0, 0]], np.float32)}     # (2, 3)
    eff = M.effective(model, masks)
    assert eff["fc1.w"].tolist() == [[0, 0], [1, 0], [0, 0]]  # unit 2 feeds nothing
    assert eff["fc2.w"].tolist() == [[0, 1, 0], [0, 0, 0]]    # unit 0 is fed by nothing
    empty = {**masks, "fc2.w": np.zeros((2, 3), np.float32)}  # layer collapse: nothing connects
    assert all(v.sum() == 0 for v in M.effective(model, empty).values())


@given(seed=seeds, density=st.sampled_from([0.1, 0.3, 0.6]))
def test_effective_is_every_kept_weight_on_some_path(seed, density):
    """Against the definition itself (every input-to-output path enumerated), on small MLPs;
    a subset of the mask, and a fixed point."""
    widths = [3, 4, 3, 2]
    rng = rng_from(seed)
    model = _mlp(widths)
    masks = {f"fc{i + 1}.w": (rng.random((b, a)) < density).astype(np.float32)
             for i, (a, b) in enumerate(zip(widths, widths[1:]))}
    eff = M.effective(model, masks)
    want = _paths_reference(masks, widths)
    for k in masks:
        assert np.array_equal(eff[k], want[k]), k
        assert (eff[k] <= masks[k]).all()
    again = M.effective(model, eff)
    assert all(np.array_equal(again[k], eff[k]) for k in eff)


def test_effective_works_at_channel_level_through_convolutions():
    """LeNet-5: a conv2 filter fed only by a conv1 channel with no kept weight is cut, and so is
    every fc1 weight reading that filter's positions; an all-ones mask keeps everything (a frozen
    network's trained entries are all connected: its frozen weights are nonzero)."""
    model = get_model("lenet5")
    ones = {k: np.ones(s, np.float32) for k, s in model.param_shapes().items() if k.endswith(".w")}
    full = M.effective(model, ones)
    assert all(np.array_equal(full[k], ones[k]) for k in ones)
    masks = {k: v.copy() for k, v in ones.items()}
    masks["conv1.w"][0] = 0                  # conv1 channel 0: no input reaches it
    masks["conv2.w"][3] = 0
    masks["conv2.w"][3, 0, 2, 2] = 1         # filter 3 reads channel 0 only
    eff = M.effective(model, masks)
    assert eff["conv2.w"][3].sum() == 0 and eff["conv2.w"][:, 0].sum() == 0  # channel 0 is dead
    assert eff["conv2.w"][4].sum() == masks["conv2.w"][4].sum() - 25
    positions = 4 * 4                        # conv2's 50 channels, pooled to 4x4, flattened
    assert eff["fc1.w"][:, 3 * positions:4 * positions].sum() == 0
    assert eff["fc1.w"][:, 4 * positions:5 * positions].sum() == 500 * positions
    assert eff["conv1.w"].sum() == masks["conv1.w"].sum()
