"""Data: MNIST and Fashion-MNIST from the committed IDX files, CIFAR-10 on demand, all verified.

    data = load_dataset("mnist")                      # offline: the repository's data/mnist/
    data.x_train.shape, data.y_train.shape            # (60000, 1, 28, 28) float32, (60000,) int64
    train, val = split_validation(data, 0.1, seed=0)  # SNIP holds out 10% for validation

The data root is `$MINIFREEZE_DATA` if set, else the `data/` folder of the repository this package
lives in (found from the package file, never from the working directory).

IDX (LeCun's format, big-endian): a 4-byte magic `0x00 0x00 0x08 ndim` (0x08 = uint8), one uint32
per dimension, then the bytes in C order. `read_idx` checks the file's SHA-256 against the pinned
value, then the magic, the dimensions and the length, and raises `DataError` naming the file and
what was wrong. CIFAR-10 comes as pickled python batches; each batch's SHA-256 is checked before it
is unpickled.

MNIST and Fashion-MNIST are committed under `data/` (origin, licence and sums in
`data/README.md`). CIFAR-10, and Fashion-MNIST where its folder is missing, are fetched with
pooch (pinned checksums) only when `download=True`; without it a missing file is an error that
says how to get it. Pixels are scaled to [0, 1] and
standardised with the training set's per-channel mean and standard deviation (constants below).
Notebook `06_pipeline` uses this file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or not what its checksum says."""


IDX_FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}

SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}
"""Pinned SHA-256 sums of the files as their publishers distribute them."""

FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                   "test_batch")
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
}
"""CIFAR-10's published checksums are MD5; these pin each extracted batch before it is unpickled."""

NORMALISATION = {  # per-channel mean and std of the training pixels in [0, 1]
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
DATASETS = tuple(NORMALISATION)
IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
"""(channels, height, width) of each data set's images."""
TRAIN_IMAGES = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000}
"""Training images of each data set (before --limit-train or a validation split)."""


@dataclass(frozen=True)
class Dataset:
    """Images (N, C, H, W) float32, standardised; labels (N,) int64."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


def data_root() -> Path:
    """$MINIFREEZE_DATA, else the repository's data/ next to the package (not the cwd)."""
    env = os.environ.get("MINIFREEZE_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_idx(path, sha256: str | None = None) -> np.ndarray:
    """An IDX file (gzipped if it ends in .gz) -> uint8 array, after checking checksum and header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if sha256 is not None and (got := file_digest(path)) != sha256:
        raise DataError(f"{path}: SHA-256 is {got}, expected {sha256} (corrupt or wrong file)")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: bad IDX magic {raw[:4].hex()}, expected 000008 then 01..04 "
                        f"(unsigned bytes, 1 to 4 dimensions)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: IDX dimensions {dims} need {expected} bytes, the file has "
                        f"{len(raw)} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _standardise(images: np.ndarray, name: str) -> np.ndarray:
    mean, std = (np.array(v, dtype=np.float32)[:, None, None] for v in NORMALISATION[name])
    return (images.astype(np.float32) / np.float32(255.0) - mean) / std  # (N, C, H, W)


def _fetch(url: str, known_hash: str, folder: Path, fname: str) -> Path:
    import pooch  # only needed for downloads
    return Path(pooch.retrieve(url, known_hash=known_hash, fname=fname, path=folder,
                               progressbar=False))


def load_idx_dataset(name: str, root=None, *, download: bool = False,
                     checksums: dict[str, str] | None = None) -> Dataset:
    """MNIST or Fashion-MNIST from root/name/*.gz; `checksums` overrides the pinned SHA-256 sums."""
    folder = Path(root or data_root()) / name
    sums = SHA256[name] if checksums is None else checksums
    arrays = {}
    for key, fname in IDX_FILES.items():
        path = folder / fname
        if not path.is_file():
            if not download or name != "fashion-mnist":
                hint = (" (restore data/fashion-mnist/ or pass download=True or --download to "
                        "fetch it)" if name == "fashion-mnist" else
                        " (set MINIFREEZE_DATA or restore data/)")
                raise DataError(f"{path}: file not found{hint}")
            _fetch(FASHION_URL + fname, "sha256:" + sums[fname], folder, fname)
        arrays[key] = read_idx(path, sums.get(fname))
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if xi.ndim != 3 or yi.ndim != 1 or len(xi) != len(yi):
            raise DataError(f"{folder}: {split} images {xi.shape} and labels {yi.shape} do not match")
        if yi.size and yi.max() > 9:
            raise DataError(f"{folder}: {split} labels must lie in 0..9, found {yi.max()}")
    return Dataset(name, _standardise(arrays["train_images"][:, None], name),
                   arrays["train_labels"].astype(np.int64),
                   _standardise(arrays["test_images"][:, None], name),
                   arrays["test_labels"].astype(np.int64))


def read_cifar_batch(path, md5: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> images (N, 3, 32, 32) uint8, labels (N,) int64."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if md5 is not None and (got := file_digest(path, "md5")) != md5:
        raise DataError(f"{path}: MD5 is {got}, expected {md5} (corrupt or wrong file)")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # a damaged pickle can raise almost anything
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(f"{path}: expected data (N, 3072) and labels (N,), got {data.shape} and "
                        f"{labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root=None, *, download: bool = False,
                 checksums: dict[str, str] | None = None) -> Dataset:
    """CIFAR-10 from root/cifar10/cifar-10-batches-py/; `checksums` overrides the pinned MD5s."""
    folder = Path(root or data_root()) / "cifar10"
    batches = folder / "cifar-10-batches-py"
    sums = CIFAR10_BATCH_MD5 if checksums is None else checksums
    if not batches.is_dir():
        if not download:
            raise DataError(f"{batches}: not found (pass download=True or --download to fetch "
                            f"CIFAR-10, 170 MB)")
        archive = _fetch(CIFAR10_URL, "md5:" + CIFAR10_MD5, folder, "cifar-10-python.tar.gz")
        with tarfile.open(archive) as tar:
            try:
                tar.extractall(folder, filter="data")  # refuses links and paths outside folder
            except TypeError:  # Python before 3.10.12 has no filter argument
                tar.extractall(folder)
    parts = {b: read_cifar_batch(batches / b, sums.get(b)) for b in CIFAR10_BATCHES}
    x_train = np.concatenate([parts[b][0] for b in CIFAR10_BATCHES[:5]])
    y_train = np.concatenate([parts[b][1] for b in CIFAR10_BATCHES[:5]])
    return Dataset("cifar10", _standardise(x_train, "cifar10"), y_train,
                   _standardise(parts["test_batch"][0], "cifar10"), parts["test_batch"][1])


def load_dataset(name: str = "mnist", root=None, *, download: bool = False,
                 checksums: dict[str, str] | None = None) -> Dataset:
    """mnist, fashion-mnist or cifar10, verified; only fashion-mnist and cifar10 ever download."""
    if name in ("mnist", "fashion-mnist"):
        return load_idx_dataset(name, root, download=download, checksums=checksums)
    if name == "cifar10":
        return load_cifar10(root, download=download, checksums=checksums)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def split_validation(data: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """Hold out `fraction` of the training set (seeded permutation) as x_val / y_val."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction: expected a number in [0, 1), got {fraction}")
    if fraction == 0.0:
        return data
    n = len(data.y_train)
    order = np.random.default_rng(seed).permutation(n)  # (n,)
    n_val = int(round(fraction * n))
    val, train = order[:n_val], order[n_val:]
    return replace(data, x_train=data.x_train[train], y_train=data.y_train[train],
                   x_val=data.x_train[val], y_val=data.y_train[val])


def _first(data: Dataset, n: int | None, split: str, who: str) -> Dataset:
    if n is None:
        return data
    if n < 1:
        raise ValueError(f"{who}: expected a positive number of examples, got {n}")
    return replace(data, **{f"x_{split}": getattr(data, f"x_{split}")[:n],
                            f"y_{split}": getattr(data, f"y_{split}")[:n]})


def limit_train(data: Dataset, n: int | None) -> Dataset:
    """The first n training examples (all if n is None)."""
    return _first(data, n, "train", "limit_train")


def limit_test(data: Dataset, n: int | None) -> Dataset:
    """The first n test examples (all if n is None): a quicker evaluation for demos and CI."""
    return _first(data, n, "test", "limit_test")
