"""ELSA: nested masks, exact extraction bit for bit on every backend, one file for every level,
`extract` and its errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifreeze import backend, elsa, init, masks as M, storage
from minifreeze.lab.cli import main
from minifreeze.data import Dataset
from minifreeze.models import get_model
from minifreeze.train import TrainConfig

BACKENDS = [b for b, why in backend.available_backends().items()
            if why is None and not backend.require(b).device_resident]


def _data(seed=0, n=80):
    rng = np.random.default_rng(seed)
    return Dataset("synthetic", rng.standard_normal((n, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 10, n), rng.standard_normal((30, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 10, 30))


levels_st = st.lists(st.sampled_from([0.99, 0.95, 0.9, 0.8, 0.5]), min_size=1, max_size=3,
                     unique=True).map(lambda v: tuple(sorted(v, reverse=True)))


@settings(max_examples=6)
@given(levels=levels_st, seed=st.integers(0, 2**32 - 1),
       sparsifier=st.sampled_from(["snip", "grad", "random", "gmp"]),
       join_init=st.sampled_from(["zero", "theta0"]))
def test_levels_nest_and_extract_exactly(levels, seed, sparsifier, join_init):
    data = _data(seed % 7)
    config = TrainConfig(model="lenet300", method="elsa", epochs=1, batch_size=40, lr=0.05,
                         warmup_steps=0, seed=seed,
                         options={"levels": levels, "sparsifier": sparsifier, "join_init": join_init,
                                  "prune_every": 1})
    for name in BACKENDS:
        with backend.use_backend(name):
            r = elsa.train(config, data, progress=False)
        n = sum(v.size for v in r.level_map.values())
        for level, rate in enumerate(r.rates, 1):
            m = r.level_masks(level)
            assert sum(int(v.sum()) for v in m.values()) == M.keep_count(n, rate)
            if level > 1:  # nested: level - 1's mask inside this one's
                prev = r.level_masks(level - 1)
                assert all(not ((prev[k] == 1) & (m[k] == 0)).any() for k in m)
            got = elsa.extract(r.params, r.level_map, level)
            want = r.snapshots[level - 1]
            for k in want:  # bit for bit: the later phases never wrote a level-<= i entry
                assert got[k].tobytes() == want[k].tobytes(), (name, level, k)
            x = data.x_test[:7]
            assert np.array_equal(r.model.predict(got, x), r.model.predict(want, x))


def test_one_file_holds_every_level_and_extract_writes_an_ordinary_pruned_file(tmp_path, capsys):
    out = tmp_path / "elsa"
    assert main(["train", "--model", "lenet300", "--method", "elsa", "--levels", "0.99", "0.9",
                 "--epochs", "1", "--limit-train", "200", "--limit-test", "100",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["rate"] for row in metrics["levels"]] == [0.99, 0.9, 0.0]
    ckpt = storage.load(out / "model.mfz")
    assert ckpt.meta["levels"] == [0.99, 0.9, 0.0] and set(ckpt.levels) == {"fc1.w", "fc2.w",
                                                                           "fc3.w"}
    # one mode for one run: the record and the file say the same (levels extract by zeroing)
    assert metrics["config"]["mode"] == ckpt.mode == ckpt.meta["config"]["mode"] == "prune"
    assert [r["extracted_bytes"] for r in metrics["levels"]] == \
        [r["extracted_bytes"] for r in elsa.level_rows(ckpt)]
    assert main(["inspect", str(out / "model.mfz")]) == 0
    text = capsys.readouterr().out
    assert "ELSA levels" in text and "one mask per sparse level" in text
    small = tmp_path / "small.mfz"
    assert main(["extract", str(out / "model.mfz"), "--rate", "0.9", "--out", str(small)]) == 0
    capsys.readouterr()
    level = storage.load(small)
    assert level.mode == "prune" and level.meta["elsa_level"] == 2
    want = elsa.extract(ckpt.params, ckpt.levels, 2)
    assert all(np.array_equal(level.params[k], want[k]) for k in want)
    assert sum(int(m.sum()) for m in level.masks.values()) == M.keep_count(266_200, 0.9)
    row = metrics["levels"][1]
    assert row["extracted_bytes"] == small.stat().st_size
    assert main(["evaluate", str(small)]) == 0


def _train_tiny(out, *method_args):
    assert main(["train", "--model", "lenet300", *method_args, "--epochs", "1",
                 "--limit-train", "100", "--limit-test", "50", "--out", str(out)]) == 0


def test_extract_errors_name_the_levels(tmp_path, capsys):
    out = tmp_path / "elsa"
    _train_tiny(out, "--method", "elsa", "--levels", "0.99")
    capsys.readouterr()
    assert main(["extract", str(out / "model.mfz"), "--rate", "0.95", "--out",
                 str(tmp_path / "x.mfz")]) == 2
    err = capsys.readouterr().err
    assert "rate 0.95 is not a level of this file; its levels are 0.99, 0.0 (dense)" in err
    assert err.count("\n") == 1
    plain = tmp_path / "plain"
    _train_tiny(plain, "--method", "snip", "--rate", "0.9")
    capsys.readouterr()
    assert main(["extract", str(plain / "model.mfz"), "--rate", "0.9", "--out",
                 str(tmp_path / "y.mfz")]) == 2
    assert "not an ELSA file (method snip)" in capsys.readouterr().err
    assert not (tmp_path / "x.mfz").exists() and not (tmp_path / "y.mfz").exists()


@given(st.data())
@settings(max_examples=20)
def test_a_corrupt_level_map_is_refused(tmp_path_factory, data):
    """Level-map bytes replaced (checksum recomputed, so only the decoder can tell)."""
    import hashlib
    path = tmp_path_factory.mktemp("lv") / "m.mfz"
    m = get_model("lenet300")
    params = init.init_params(m, 0)
    levels = consistent_levels(m, [0.9, 0.5], seed=0)
    ckpt = storage.Checkpoint("lenet300", params, seed=0, mode="prune",
                              meta={"method": "elsa", "levels": [0.9, 0.5, 0.0]}, levels=levels)
    raw = storage.to_bytes(ckpt)
    back = storage.load(_write(path, raw))
    assert all(np.array_equal(back.levels[k], levels[k]) for k in levels)
    header = storage.read_header(path)
    entry = data.draw(st.sampled_from(header["tensors"][::2]))  # the .w entries
    offset = storage._PREFIX.size + int.from_bytes(raw[6:10], "little")
    for e in header["tensors"]:
        if e["name"] == entry["name"]:
            break
        offset += e.get("level_bytes", 0) + e["value_bytes"]
    pos = offset + data.draw(st.integers(0, entry["level_bytes"] - 1))
    flip = data.draw(st.integers(1, 255))
    body = bytearray(raw[:-32])
    body[pos] ^= flip
    _write(path, bytes(body) + hashlib.sha256(bytes(body)).digest())
    try:
        bad = storage.load(path)
    except storage.StorageError as err:
        assert "m.mfz" in str(err)
    else:  # a flip that still decodes to valid levels with the same counts: a different file
        assert any(not np.array_equal(bad.levels[k], levels[k]) for k in levels)


def consistent_levels(model, rates, seed):
    """A level map whose level i keeps exactly round((1 - q_i) N) weights, at random places."""
    shapes = {k: model.param_shapes()[k] for k in model.weight_names()}
    n = sum(int(np.prod(s)) for s in shapes.values())
    flat = np.full(n, len(rates) + 1, np.uint8)
    order = np.random.default_rng(seed).permutation(n)
    for level, q in reversed(list(enumerate(rates, 1))):
        flat[order[:M.keep_count(n, q)]] = level
    out, offset = {}, 0
    for k, s in shapes.items():
        out[k] = flat[offset:offset + int(np.prod(s))].reshape(s)
        offset += int(np.prod(s))
    return out


def _write(path, raw):
    path.write_bytes(raw)
    return path
