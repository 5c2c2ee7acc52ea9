"""Data loading: IDX and CIFAR readers on small synthetic files; the committed MNIST is verified."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from minifreeze import data as D


def write_idx(path, array: np.ndarray, gz: bool = True) -> str:
    raw = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return D.file_digest(path)


def fake_idx_dataset(root, name="fashion-mnist", n_train=30, n_test=10, seed=0):
    """Four IDX files in the real format; returns their SHA-256 sums."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    sums = {}
    for split, n in (("train", n_train), ("test", n_test)):
        prefix = "train" if split == "train" else "t10k"
        sums[f"{prefix}-images-idx3-ubyte.gz"] = write_idx(
            folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        sums[f"{prefix}-labels-idx1-ubyte.gz"] = write_idx(
            folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return sums


def test_synthetic_idx_dataset_loads_standardised(tmp_path):
    sums = fake_idx_dataset(tmp_path)
    ds = D.load_dataset("fashion-mnist", tmp_path, checksums=sums)
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_train.dtype == np.float32
    assert ds.y_test.shape == (10,) and ds.y_test.dtype == np.int64
    train = D.split_validation(ds, 0.2, seed=1)
    assert len(train.y_train) == 24 and len(train.y_val) == 6


def test_idx_errors_name_the_file_and_the_problem(tmp_path):
    p = tmp_path / "a.idx"
    digest = write_idx(p, np.zeros((3, 2), np.uint8), gz=False)
    assert D.read_idx(p, digest).shape == (3, 2)
    with pytest.raises(D.DataError, match="a.idx: SHA-256 is .* expected 00"):
        D.read_idx(p, "00" * 32)
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(D.DataError, match=r"dimensions \(3, 2\) need 18 bytes, the file has 17"):
        D.read_idx(p)
    p.write_bytes(b"\x00\x00\x09\x01" + bytes(8))
    with pytest.raises(D.DataError, match="bad IDX magic 00000901"):
        D.read_idx(p)
    g = tmp_path / "b.gz"
    g.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + bytes(5))[:-6])
    with pytest.raises(D.DataError, match="b.gz: not a readable gzip file"):
        D.read_idx(g)
    with pytest.raises(D.DataError, match="file not found"):
        D.read_idx(tmp_path / "missing.gz")


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(D.DataError, match="restore data/fashion-mnist/ or pass download=True"):
        D.load_dataset("fashion-mnist", tmp_path)


def test_synthetic_cifar_batches(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sums = {}
    for b in D.CIFAR10_BATCHES:
        with open(folder / b, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, 4))}, f)
        sums[b] = D.file_digest(folder / b, "md5")
    ds = D.load_dataset("cifar10", tmp_path, checksums=sums)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(D.DataError, match="test_batch: MD5 is"):
        D.load_dataset("cifar10", tmp_path, checksums=sums)


def test_data_root_comes_from_the_environment_or_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIFREEZE_DATA", str(tmp_path))
    assert D.data_root() == tmp_path
    monkeypatch.delenv("MINIFREEZE_DATA")
    monkeypatch.chdir(tmp_path)
    assert (D.data_root() / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_committed_mnist_labels_match_the_published_counts():
    folder = D.data_root() / "mnist"
    y = D.read_idx(folder / "t10k-labels-idx1-ubyte.gz", D.SHA256["mnist"]["t10k-labels-idx1-ubyte.gz"])
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_committed_fashion_mnist_loads_offline_and_verified():
    """data/fashion-mnist/ is the publisher's copy: it loads with no network, each file checked
    against the pinned SHA-256, 6,000 training and 1,000 test images per class."""
    data = D.load_dataset("fashion-mnist")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert abs(float(data.x_train.mean())) < 1e-3 and abs(float(data.x_train.std()) - 1) < 1e-2
    for fname, sha in D.SHA256["fashion-mnist"].items():
        assert D.file_digest(D.data_root() / "fashion-mnist" / fname) == sha


def test_limit_test_keeps_the_first_n_test_examples(tmp_path):
    sums = fake_idx_dataset(tmp_path, n_test=10)
    data = D.load_dataset("fashion-mnist", tmp_path, checksums=sums)
    small = D.limit_test(data, 4)
    assert np.array_equal(small.x_test, data.x_test[:4]) and np.array_equal(small.y_test, data.y_test[:4])
    assert small.x_train is data.x_train and D.limit_test(data, None) is data
    with pytest.raises(ValueError, match="limit_test: expected a positive number"):
        D.limit_test(data, 0)


def test_a_wrong_file_in_minifreeze_data_is_one_line_before_training(monkeypatch, tmp_path,
                                                                     capsys):
    """Present but wrong: a different file under the expected name is refused by its SHA-256,
    by train and by sweep, before any run starts."""
    import shutil
    from minifreeze.lab.cli import main
    src = D.data_root() / "mnist"
    (tmp_path / "mnist").mkdir()
    for f in src.glob("*.gz"):
        shutil.copy(f, tmp_path / "mnist" / f.name)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(10_000, np.uint8))
    monkeypatch.setenv("MINIFREEZE_DATA", str(tmp_path))
    for argv in (["train", "--model", "lenet300", "--method", "dense", "--epochs", "1",
                  "--out", str(tmp_path / "run")],
                 ["sweep", "--models", "lenet300", "--methods", "dense", "--epochs", "1",
                  "--out", str(tmp_path / "sweep")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "t10k-labels-idx1-ubyte.gz: SHA-256 is" in err and "corrupt or wrong file" in err
    assert not list(tmp_path.glob("*/metrics.json")) and not list(tmp_path.glob("*/*/metrics.json"))
