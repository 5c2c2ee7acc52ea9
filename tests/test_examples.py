"""examples/freezenet_minimal.py, FreezeNet written with the lessons alone, is the pipeline's
FreezeNet: the same mask and the same parameters after the same steps, bit for bit."""

import importlib.util
from pathlib import Path

import numpy as np

from minifreeze import init, storage
from minifreeze.data import limit_test, limit_train, load_dataset
from minifreeze.train import TrainConfig, train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "freezenet_minimal.py"


def _example():
    spec = importlib.util.spec_from_file_location("freezenet_minimal", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_minimal_freezenet_is_the_pipelines_bit_for_bit():
    ex = _example()
    data = limit_test(limit_train(load_dataset("mnist"), 1500), 500)  # 15 steps an epoch
    model, masks, theta0, params = ex.freezenet(data, seed=3, rate=0.99, epochs=2)
    config = TrainConfig(model="lenet5", method="freezenet", rate=0.99, seed=3, epochs=2,
                         shards=1, lr=ex.LR, momentum=ex.MOMENTUM, weight_decay=ex.WEIGHT_DECAY,
                         batch_size=ex.BATCH, warmup_steps=ex.WARMUP, init="xavier")
    result = train(config, data, progress=False)
    assert list(masks) == list(result.masks)
    for k in masks:
        assert np.array_equal(masks[k], result.masks[k]), k
    for k in params:
        assert np.array_equal(params[k].view(np.uint32), result.params[k].view(np.uint32)), k
        assert not np.array_equal(params[k], theta0[k]), k  # every tensor trained somewhere
        if k in masks:
            off = masks[k] == 0
            assert np.array_equal(params[k][off].view(np.uint32), theta0[k][off].view(np.uint32))


def test_the_minimal_freezenet_saves_what_the_seed_restores(tmp_path, monkeypatch, capsys):
    """Its .mfz holds the seed, the mask and the trained values: loaded back, the frozen weights
    are theta0 regenerated from the seed, the trained ones what it trained."""
    ex = _example()
    small = limit_test(limit_train(load_dataset("mnist"), 300), 200)
    monkeypatch.setattr(ex, "load_dataset", lambda name: small)
    out = tmp_path / "fz.mfz"
    assert ex.main(["--seed", "1", "--rate", "0.995", "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    back = storage.load(out)
    theta0 = init.init_params(back.model(), back.seed, back.init_scheme)
    assert back.seed == 1 and back.mode == "freeze"
    kept = sum(int(m.sum()) for m in back.masks.values())
    assert kept == round(0.005 * sum(m.size for m in back.masks.values()))
    for k, m in back.masks.items():
        off = m == 0
        assert np.array_equal(back.params[k][off].view(np.uint32), theta0[k][off].view(np.uint32))
        assert not np.array_equal(back.params[k][~off], theta0[k][~off])
