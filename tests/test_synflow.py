"""SynFlow through the hand-written passes: R in closed form, the conservation law, the schedule,
one round equal to one-shot scoring, and the exact kept count."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minifreeze import init, masks as M, synflow
from minifreeze.models import Model, conv, flatten, get_model, linear, maxpool, relu

from .strategies import rng_from, seeds


def _random(model, rng, bias_scale=0.3):
    return {k: (rng.standard_normal(s) * (bias_scale if k.endswith(".b") else 0.5))
            for k, s in model.param_shapes().items()}


def test_r_of_a_network_without_nonlinearities_is_the_product_of_absolute_weights():
    model = Model("linear2", (1, 3, 3), (flatten(), linear("fc1", 9, 5), linear("fc2", 5, 4)))
    p = _random(model, rng_from(1))
    _, r = synflow.synflow_scores(model, p)
    a1, a2 = np.abs(p["fc1.w"]), np.abs(p["fc2.w"])
    closed = np.ones(4) @ (a2 @ (a1 @ np.ones(9) + np.abs(p["fc1.b"])) + np.abs(p["fc2.b"]))
    assert r == pytest.approx(closed, rel=1e-12)


def _conv_model():
    return Model("small", (2, 6, 6), (
        conv("conv1", 2, 3, 3), relu("relu1"), maxpool("pool1", 2), conv("conv2", 3, 4, 2),
        relu("relu2"), flatten(), linear("fc1", 4, 5), relu("relu3"), linear("fc2", 5, 3)))


@given(seed=seeds)
def test_conservation_incoming_equals_outgoing_at_every_hidden_unit(seed):
    """The paper's Theorem 1, per hidden channel or unit: the scores of its incoming weights and
    bias sum to the scores of its outgoing weights (max-pool between keeps it)."""
    model = _conv_model()
    p = _random(model, rng_from(seed))
    s, r = synflow.synflow_scores(model, p, include_biases=True)
    incoming = {"conv1": s["conv1.w"].sum(axis=(1, 2, 3)) + s["conv1.b"],
                "conv2": s["conv2.w"].sum(axis=(1, 2, 3)) + s["conv2.b"],
                "fc1": s["fc1.w"].sum(axis=1) + s["fc1.b"]}
    outgoing = {"conv1": s["conv2.w"].sum(axis=(0, 2, 3)),  # channel c feeds conv2.w[:, c]
                "conv2": s["fc1.w"].sum(axis=0),  # conv2's output is 4 x 1 x 1: one feature each
                "fc1": s["fc2.w"].sum(axis=0)}
    for layer in incoming:
        np.testing.assert_allclose(incoming[layer], outgoing[layer], rtol=1e-10, err_msg=layer)
    # and so every layer's scores (with its biases) sum to R at the output
    np.testing.assert_allclose(s["fc2.w"].sum() + s["fc2.b"].sum(), r, rtol=1e-10)


def test_lenet5_layers_each_carry_the_whole_flow_and_synflow_avoids_collapse():
    model = get_model("lenet5")
    theta0 = init.init_params(model, 0)
    s, r = synflow.synflow_scores(model, theta0)  # biases are 0: each layer's scores sum to R
    for name, v in s.items():
        assert v.sum() == pytest.approx(r, rel=1e-9), name
    m = synflow.synflow_masks(model, theta0, 0.999, iterations=10)
    kept = {k: int(v.sum()) for k, v in m.items()}
    assert sum(kept.values()) == M.keep_count(sum(v.size for v in m.values()), 0.999)
    assert min(kept.values()) >= 50, kept  # no layer emptied (SNIP keeps 1 of fc1's at 0.999)


@settings(max_examples=15)
@given(seed=seeds, rate=st.sampled_from([0.0, 0.5, 0.9, 0.99]), iterations=st.integers(1, 6),
       schedule=st.sampled_from(synflow.SCHEDULES))
def test_the_kept_count_is_exact_and_masks_only_shrink(seed, rate, iterations, schedule):
    model = _conv_model()
    p = _random(model, rng_from(seed))
    n = sum(np.prod(model.param_shapes()[k]) for k in model.weight_names())
    masks = synflow.synflow_masks(model, p, rate, iterations=iterations, schedule=schedule)
    assert sum(int(v.sum()) for v in masks.values()) == M.keep_count(int(n), rate)
    rates = synflow.rate_schedule(rate, iterations, schedule)
    assert rates[-1] == rate and all(a <= b for a, b in zip(rates, rates[1:]))


@given(seed=seeds, rate=st.sampled_from([0.5, 0.9, 0.99]))
def test_one_round_is_one_shot_scoring(seed, rate):
    model = _conv_model()
    p = _random(model, rng_from(seed))
    once = synflow.synflow_masks(model, p, rate, iterations=1)
    scores, _ = synflow.synflow_scores(model, p)
    direct = M.select_topk(scores, rate)
    assert all(np.array_equal(once[k], direct[k]) for k in direct)


def test_masked_weights_score_zero_and_bad_arguments_are_clear():
    model = _conv_model()
    p = _random(model, rng_from(3))
    m = {k: (rng_from(4).random(p[k].shape) < 0.5).astype(np.float32)
         for k in model.weight_names()}
    s, _ = synflow.synflow_scores(model, p, m)
    assert all((s[k][m[k] == 0] == 0).all() for k in m)
    with pytest.raises(ValueError, match="unknown SynFlow schedule 'cubic'"):
        synflow.rate_schedule(0.9, 10, "cubic")
    with pytest.raises(ValueError, match="iterations: expected a whole number >= 1, got 0"):
        synflow.rate_schedule(0.9, 0)
    with pytest.raises(ValueError, match="rate"):
        synflow.synflow_masks(model, p, 1.0)


def test_the_registry_runs_100_rounds_and_each_round_only_removes():
    """The registry path (`prepare`) gives the mask of exactly 100 rounds (not 99, 10 or 1: each
    gives another mask here), and every round's kept weights are a subset of the round before:
    a weight SynFlow removed never comes back."""
    from minifreeze.data import limit_train, load_dataset
    from minifreeze.train import TrainConfig, prepare
    model = get_model("lenet300")
    data = limit_train(load_dataset("mnist"), 500)
    registry = prepare(TrainConfig(model="lenet300", method="synflow_prune", rate=0.999, seed=0),
                       data).masks
    theta0 = init.init_params(model, 0)
    rounds = []
    hundred = synflow.synflow_masks(model, theta0, 0.999,
                                    on_round=lambda k, m: rounds.append((k, m)))
    assert all(np.array_equal(registry[k], hundred[k]) for k in hundred)
    for n in (99, 10, 1):
        other = synflow.synflow_masks(model, theta0, 0.999, iterations=n)
        assert not all(np.array_equal(other[k], hundred[k]) for k in hundred), n
    assert [k for k, _ in rounds] == list(range(1, 101))
    for (_, before), (k, after) in zip(rounds, rounds[1:]):
        assert all(((after[n] == 1) <= (before[n] == 1)).all() for n in after), f"round {k}"
