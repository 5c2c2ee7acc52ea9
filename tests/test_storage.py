"""The .mfz format: codecs, bit-for-bit round trips, sizes, and clear errors on damaged files."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minifreeze import init, masks as M, storage
from minifreeze.models import get_model

from .strategies import rng_from, seeds


@given(st.lists(st.integers(0, 2**63), max_size=50))
def test_varints_round_trip(values):
    v = np.array(values, dtype=np.uint64)
    assert np.array_equal(storage.decode_varints(storage.encode_varints(v)), v)


@given(seeds, st.integers(1, 300), st.floats(0.0, 1.0))
def test_mask_codec_round_trips_and_picks_the_smaller(seed, n, density):
    m = (rng_from(seed).random(n) < density).astype(np.float32)
    enc, buf = storage.encode_mask(m)
    assert np.array_equal(storage.decode_mask(enc, buf, (n,), int(m.sum())), m)
    assert len(buf) <= (n + 7) // 8


def _trained_checkpoint(seed, rate, mode, model_name="lenet300"):
    """A checkpoint whose trainable entries were changed, as training would."""
    model = get_model(model_name)
    theta0 = init.init_params(model, seed)
    rng = rng_from(seed)
    scores = {k: rng.random(theta0[k].shape) for k in model.weight_names()}
    masks = M.select_topk(scores, rate)
    params = M.apply_mode(theta0, masks, mode)
    for k, v in params.items():
        step = rng.standard_normal(v.shape).astype(np.float32)
        v += step * masks[k] if k in masks else step
    return model, storage.Checkpoint(model.name, params, masks, {}, seed, "xavier", mode,
                                     {"method": "test", "rate": rate})


@pytest.mark.parametrize("mode", ["freeze", "prune"])
@given(seed=seeds, rate=st.sampled_from([0.0, 0.5, 0.99, 0.995]))
def test_save_load_gives_identical_params_and_logits(tmp_path_factory, mode, seed, rate):
    model, ckpt = _trained_checkpoint(seed, rate, mode)
    path = tmp_path_factory.mktemp("mfz") / "model.mfz"
    size = storage.save(path, ckpt)
    assert size == path.stat().st_size
    back = storage.load(path)
    for k, v in ckpt.params.items():
        assert np.array_equal(back.params[k].view(np.uint32), v.view(np.uint32)), k
    x = rng_from(seed).standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(model.predict(ckpt.params, x), back.model().predict(back.params, x))
    assert back.meta["rate"] == rate and back.mode == mode and back.seed == seed


def test_lenet5_freezenet_file_is_far_smaller_than_dense(tmp_path):
    _, ckpt = _trained_checkpoint(0, 0.995, "freeze", "lenet5")
    size = storage.save(tmp_path / "m.mfz", ckpt)
    info = storage.describe(tmp_path / "m.mfz")
    assert info["dense_bytes"] == 1_724_320
    assert size < 1_724_320 / 50
    assert info["file_bytes"] == info["header_bytes"] + info["mask_bytes"] + info["value_bytes"] + 32
    assert {r["encoding"] for r in info["tensors"] if r["kind"] == "masked"} <= {"delta", "bitmap"}
    assert list(tmp_path.iterdir()) == [tmp_path / "m.mfz"]  # no temporary file left behind


def test_batchnorm_buffers_round_trip(tmp_path):
    model = get_model("vgg", batch_norm=True, input_shape=(1, 28, 28))
    params = init.init_params(model, 1)
    buffers = {k: v + 0.25 for k, v in model.init_buffers().items()}
    ckpt = storage.Checkpoint("vgg", params, {}, buffers, 1, "xavier", "freeze", {},
                              {"batch_norm": True, "input_shape": [1, 28, 28]})
    storage.save(tmp_path / "v.mfz", ckpt)
    back = storage.load(tmp_path / "v.mfz")
    assert all(np.array_equal(back.buffers[k], buffers[k]) for k in buffers)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    _, ckpt = _trained_checkpoint(5, 0.99, "freeze")
    path = tmp_path_factory.mktemp("bad") / "model.mfz"
    storage.save(path, ckpt)
    return path.read_bytes()


@given(st.data())
def test_truncated_or_altered_files_raise_a_clear_error(tmp_path_factory, saved, data):
    path = tmp_path_factory.mktemp("damaged") / "model.mfz"
    if data.draw(st.booleans(), label="truncate"):
        cut = data.draw(st.integers(0, len(saved) - 1), label="cut")
        path.write_bytes(saved[:cut])
    else:
        pos = data.draw(st.integers(0, len(saved) - 1), label="pos")
        flip = data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(saved[:pos] + bytes([saved[pos] ^ flip]) + saved[pos + 1:])
    with pytest.raises(storage.StorageError, match="model.mfz: "):
        storage.load(path)


def test_missing_file_and_wrong_magic(tmp_path):
    with pytest.raises(storage.StorageError, match="file not found"):
        storage.load(tmp_path / "nope.mfz")
    (tmp_path / "x.mfz").write_bytes(b"PK\3\4" + bytes(100))
    with pytest.raises(storage.StorageError, match="not an .mfz file"):
        storage.load(tmp_path / "x.mfz")
