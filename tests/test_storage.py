"""The .mfz format: codecs, bit-for-bit round trips, sizes, and clear errors on damaged files."""

import numpy as np
import pytest
from hypothesis import event, given, strategies as st

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
    return model, storage.Checkpoint(model.name, params, masks=masks, seed=seed, mode=mode,
                                     meta={"method": "test", "rate": rate})


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
    ckpt = storage.Checkpoint("vgg", params, buffers=buffers, seed=1, mode="freeze",
                              model_kwargs={"batch_norm": True, "input_shape": [1, 28, 28]})
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


# --- a header that lies -------------------------------------------------------------------------

VOCAB = ["freeze", "prune", "dense", "masked", "leveled", "bitmap", "delta", "nested", "packed",
         "param", "buffer", "xavier", "kaiming", "lenet5", "lenet300", "vgg", "fc1.w", "fc1.b"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(-1e6, 1e6)
    | st.sampled_from(VOCAB),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(VOCAB), inner,
                                                                max_size=2), max_leaves=4)


def _nearby(value):
    """Plausible lies about a value: off by one, transposed, swapped for a word of the format."""
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, int):
        return st.sampled_from([value + 1, value - 1, 0, 2 * value + 1, 2**32, -1, 200_000])
    if isinstance(value, float):
        return st.sampled_from([value + 1e-3, 0.0, 0.5, 0.999, 1.0, -0.1])
    if isinstance(value, str):
        return st.sampled_from(VOCAB)
    if isinstance(value, list):
        options = [value[::-1], value + value[-1:], value[:-1], [200_000, 200_000]]
        return st.sampled_from([o for o in options if o != value] or [[]])
    return st.just({})


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def _file_with_header(raw: bytes, header: dict) -> bytes:
    import hashlib
    import json
    head_len = int.from_bytes(raw[6:10], "little")
    payload = raw[10 + head_len:-32]
    head = json.dumps(header, sort_keys=True).encode()
    body = storage._PREFIX.pack(storage.MAGIC, storage.FORMAT_VERSION, len(head)) + head + payload
    return body + hashlib.sha256(body).digest()


def _elsa_checkpoint():
    from tests.test_elsa import consistent_levels
    model = get_model("lenet300")
    params = init.init_params(model, 2)
    return storage.Checkpoint("lenet300", params, seed=2, mode="prune",
                              meta={"method": "elsa", "rate": 0.0, "levels": [0.99, 0.9, 0.0]},
                              levels=consistent_levels(model, [0.99, 0.9], seed=1))


@pytest.fixture(scope="module")
def honest_files():
    files = {}
    for mode in ("freeze", "prune"):
        _, ckpt = _trained_checkpoint(7, 0.99, mode)
        files[mode] = (storage.to_bytes(ckpt), ckpt)
    ckpt = _elsa_checkpoint()
    files["elsa"] = (storage.to_bytes(ckpt), ckpt)
    return files


def _same_model(a: storage.Checkpoint, b: storage.Checkpoint) -> bool:
    same = lambda x, y: set(x) == set(y) and all(  # noqa: E731
        np.asarray(x[k]).tobytes() == np.asarray(y[k]).tobytes() for k in x)
    return (a.model().fingerprint() == b.model().fingerprint() and same(a.params, b.params)
            and same(a.buffers, b.buffers) and same(a.masks, b.masks)
            and same(a.levels, b.levels))


@given(st.data())
def test_a_header_that_lies_is_refused_or_changes_nothing(tmp_path_factory, honest_files, data):
    """Random edits of a valid header, checksum recomputed: a StorageError naming the file, or
    exactly the original model (an edit of what is only a record, such as the method's name)."""
    import copy
    import json
    kind = data.draw(st.sampled_from(sorted(honest_files)), label="file")
    raw, original = honest_files[kind]
    header = json.loads(raw[10:10 + int.from_bytes(raw[6:10], "little")])
    edited = copy.deepcopy(header)
    path = data.draw(st.sampled_from(list(_paths(header))[1:]), label="path")
    parent, key = _get(edited, path[:-1]), path[-1]
    how = data.draw(st.sampled_from(["nearby", "any", "delete", "add"]), label="how")
    if how == "nearby":
        parent[key] = data.draw(_nearby(parent[key]), label="value")
    elif how == "any":
        parent[key] = data.draw(json_values, label="value")
    elif how == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    else:
        target = parent[key] if isinstance(parent[key], dict) else parent
        if isinstance(target, dict):
            target[data.draw(st.sampled_from(VOCAB), label="new key")] = \
                data.draw(json_values, label="value")
        else:
            target.append(data.draw(json_values, label="value"))
    f = tmp_path_factory.mktemp("lie") / "model.mfz"
    f.write_bytes(_file_with_header(raw, edited))
    try:
        back = storage.load(f)
    except storage.StorageError as err:
        assert "model.mfz: " in str(err) and "\n" not in str(err)
        event("refused")
        return
    event("loaded, the same model")
    assert _same_model(back, original), (path, how, _get(edited, path[:-1]))


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["tensors"][0].update(shape=[200_000, 200_000]),
     r"tensors\[0\] \(fc1.w\).shape: expected \[300, 784\], got \[200000, 200000\]"),
    (lambda h: h["tensors"][0].update(shape=[784, 300]), r"\.shape: expected \[300, 784\]"),
    (lambda h: h.update(seed=2**32), r"header field seed: expected an integer in \[0, 2\*\*32\)"),
    (lambda h: h.update(seed=8), "the frozen weights regenerated from seed 8"),
    (lambda h: h.update(mode="prune"), "frozen_sha256: expected absent"),
    (lambda h: h.update(rate=0.995), "header field rate: expected a rate that keeps"),
    (lambda h: h.update(model_kwargs={"num_classes": 10**9}), "num_classes must be a whole"),
    (lambda h: h.update(model="resnet"), "header field model: expected one of"),
    (lambda h: h["tensors"].pop(), "tensors: expected 6 entries, got 5"),
    (lambda h: h["tensors"][0].update(count=h["tensors"][0]["count"] + 1),
     r"value_bytes: expected"),
])
def test_named_lies_name_their_field(tmp_path, honest_files, edit, message):
    import json
    raw, _ = honest_files["freeze"]
    header = json.loads(raw[10:10 + int.from_bytes(raw[6:10], "little")])
    edit(header)
    f = tmp_path / "model.mfz"
    f.write_bytes(_file_with_header(raw, header))
    with pytest.raises(storage.StorageError, match=message):
        storage.load(f)


def test_cli_lie_is_one_line_exit_2(tmp_path, honest_files, capsys):
    import json
    from minifreeze.lab.cli import main
    raw, _ = honest_files["freeze"]
    header = json.loads(raw[10:10 + int.from_bytes(raw[6:10], "little")])
    header["tensors"][0]["shape"] = [200_000, 200_000]
    f = tmp_path / "model.mfz"
    f.write_bytes(_file_with_header(raw, header))
    for cmd in ("evaluate", "inspect"):
        assert main([cmd, str(f)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "shape: expected [300, 784]" in err


def test_save_refuses_a_freeze_checkpoint_whose_frozen_entries_are_not_theta0(tmp_path):
    _, ckpt = _trained_checkpoint(3, 0.9, "freeze")
    name, m = next(iter(ckpt.masks.items()))
    ckpt.params[name][m == 0] += 1.0
    with pytest.raises(storage.StorageError, match="holds values other than theta0"):
        storage.save(tmp_path / "m.mfz", ckpt)
    assert not list(tmp_path.iterdir())


def test_version_1_files_still_load(tmp_path, honest_files):
    import json
    raw, original = honest_files["freeze"]
    header = json.loads(raw[10:10 + int.from_bytes(raw[6:10], "little")])
    del header["architecture"], header["frozen_sha256"]
    import hashlib
    head = json.dumps(header, sort_keys=True).encode()
    payload = raw[10 + int.from_bytes(raw[6:10], "little"):-32]
    body = storage._PREFIX.pack(storage.MAGIC, 1, len(head)) + head + payload
    (tmp_path / "v1.mfz").write_bytes(body + hashlib.sha256(body).digest())
    assert _same_model(storage.load(tmp_path / "v1.mfz"), original)


def test_a_resaved_file_names_the_library_that_wrote_it(tmp_path):
    from minifreeze import __version__
    model = get_model("lenet300")
    params = init.init_params(model, 2)
    old = storage.Checkpoint("lenet300", params, seed=2, mode="prune",
                             meta={"library_version": "0.0.1"})  # as read from an old file
    storage.save(tmp_path / "a.mfz", old)
    assert storage.describe(tmp_path / "a.mfz")["library_version"] == __version__
