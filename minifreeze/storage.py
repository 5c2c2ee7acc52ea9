"""Compact storage (`.mfz`): store what was trained, regenerate what was frozen from the seed.

A FreezeNet at q = 0.995 trains 0.5% of its weights; the rest are theta0, which one 32-bit seed
regenerates (`init.py`). So the file holds, per masked tensor, the mask and the trained values only,
and everything else is recomputed on load. A pruned network (SNIP) stores the same thing: its
non-selected entries are 0 instead of theta0.

Layout (integers little-endian):

    b"MFZ\\0"                          magic, 4 bytes
    uint16 version                     FORMAT_VERSION
    uint32 header_len, header          UTF-8 JSON: model (name, kwargs), init scheme, seed, method,
                                       score, mode, rate, library version, tensors (below)
    tensor payloads                    in header order
    32 bytes                           SHA-256 of everything before it

Each tensor entry in the header names its shape and kind:

    dense     float32 values, all of them (biases, batch norm, running statistics, dense models)
    masked    the mask, then float32 values of the entries with m == 1 in C order; the mask is the
              smaller of a packed bitmap (ceil(N / 8) bytes, `numpy.packbits`) and the gaps between
              successive kept flat indices (the first gap is the first index) as LEB128 varints,
              7 bits a byte, high bit set on all but a value's last byte

    save(path, ckpt)       written to a temporary name in the same folder, then renamed (atomic)
    ckpt = load(path)      checks magic, version, lengths and checksum; rebuilds params bit for bit
    describe(path)         what the file holds, tensor by tensor, and its size breakdown

Notebook `06_pipeline` walks through this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minifreeze import __version__, init, models

MAGIC = b"MFZ\0"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")  # magic, version, header length


class StorageError(ValueError):
    """An .mfz file is missing, truncated, altered or not an .mfz file."""


@dataclass
class Checkpoint:
    """Everything needed to rebuild a trained network, and to say how it was made."""
    model_name: str
    params: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0
    init_scheme: str = "xavier"
    mode: str = "freeze"
    meta: dict = field(default_factory=dict)  # method, score, rate, ...
    model_kwargs: dict = field(default_factory=dict)

    def model(self) -> models.Model:
        return models.get_model(self.model_name, **self.model_kwargs)


# --- mask codecs --------------------------------------------------------------------------------

def encode_varints(values: np.ndarray) -> bytes:
    """Non-negative integers -> LEB128 bytes (vectorised)."""
    v = np.asarray(values, dtype=np.uint64)  # (K,)
    if v.size == 0:
        return b""
    bits = np.floor(np.log2(np.maximum(v, 1).astype(np.float64))).astype(np.int64) + 1
    nbytes = np.maximum(1, (bits + 6) // 7)  # (K,) bytes per value
    start = np.concatenate([[0], np.cumsum(nbytes)[:-1]])  # (K,)
    out = np.zeros(int(nbytes.sum()), dtype=np.uint8)
    for j in range(int(nbytes.max())):
        sel = nbytes > j
        low7 = (v[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (nbytes[sel] - 1 > j).astype(np.uint64) << np.uint64(7)
        out[start[sel] + j] = (low7 | more).astype(np.uint8)
    return out.tobytes()


def decode_varints(buf: bytes) -> np.ndarray:
    """LEB128 bytes -> uint64 values; raises StorageError if the last value is cut off."""
    b = np.frombuffer(buf, dtype=np.uint8)  # (B,)
    if b.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if b[-1] & 0x80:
        raise StorageError("truncated varint in a mask")
    ends = np.flatnonzero(b < 0x80)  # (K,) last byte of each value
    starts = np.concatenate([[0], ends[:-1] + 1])  # (K,)
    pos = np.arange(b.size) - np.repeat(starts, ends - starts + 1)  # (B,) byte index in value
    if pos.max() > 9:
        raise StorageError("varint longer than 64 bits in a mask")
    parts = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)  # (B,)
    return np.add.reduceat(parts, starts)


def encode_mask(m: np.ndarray) -> tuple[str, bytes]:
    """The smaller of ("bitmap", packbits) and ("delta", LEB128 gaps between kept indices)."""
    flat = np.ravel(m) != 0  # (N,)
    bitmap = np.packbits(flat).tobytes()
    idx = np.flatnonzero(flat).astype(np.uint64)  # (K,)
    gaps = np.diff(idx, prepend=np.uint64(0)) if idx.size else idx  # (K,)
    delta = encode_varints(gaps)
    return ("delta", delta) if len(delta) < len(bitmap) else ("bitmap", bitmap)


def decode_mask(encoding: str, buf: bytes, shape: tuple[int, ...], count: int) -> np.ndarray:
    """Inverse of encode_mask -> float32 0/1 array of `shape` with exactly `count` ones."""
    n = int(np.prod(shape))
    if encoding == "bitmap":
        flat = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=n).astype(np.float32)
    elif encoding == "delta":
        idx = np.cumsum(decode_varints(buf))  # (K,)
        if idx.size != count or (idx.size and idx[-1] >= n):
            raise StorageError(f"mask indices do not fit a tensor of shape {shape}")
        flat = np.zeros(n, dtype=np.float32)
        flat[idx.astype(np.int64)] = 1.0
    else:
        raise StorageError(f"unknown mask encoding {encoding!r}")
    if int(flat.sum()) != count:
        raise StorageError(f"mask has {int(flat.sum())} ones, the header says {count}")
    return flat.reshape(shape)


# --- save ---------------------------------------------------------------------------------------

def _payloads(ckpt: Checkpoint):
    """(header entry, payload bytes) per tensor: params in model order, then buffers."""
    for name, value in list(ckpt.params.items()) + list(ckpt.buffers.items()):
        value = np.ascontiguousarray(value, dtype=np.float32)
        entry = {"name": name, "shape": list(value.shape),
                 "group": "buffer" if name in ckpt.buffers else "param"}
        if name in ckpt.masks:
            m = ckpt.masks[name]
            encoding, mask_bytes = encode_mask(m)
            values = value.reshape(-1)[np.flatnonzero(m)].tobytes()
            entry.update(kind="masked", encoding=encoding, mask_bytes=len(mask_bytes),
                         count=int(np.count_nonzero(m)), value_bytes=len(values))
            yield entry, mask_bytes + values
        else:
            entry.update(kind="dense", value_bytes=value.nbytes)
            yield entry, value.tobytes()


def to_bytes(ckpt: Checkpoint) -> bytes:
    """The .mfz encoding of a checkpoint."""
    entries, blobs = [], []
    for entry, blob in _payloads(ckpt):
        entries.append(entry)
        blobs.append(blob)
    header = {"model": ckpt.model_name, "model_kwargs": ckpt.model_kwargs,
              "init": ckpt.init_scheme, "seed": init.check_seed(ckpt.seed), "mode": ckpt.mode,
              "library_version": __version__, **ckpt.meta, "tensors": entries}
    head = json.dumps(header, sort_keys=True).encode()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head + b"".join(blobs)
    return body + hashlib.sha256(body).digest()


def write_atomic(path, data: bytes) -> int:
    """Write bytes to a temporary file in the same folder, then rename it over `path`.

    A reader sees the old file or the new one, never half of one; on any error the temporary
    file is removed. Returns the byte size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def save(path, ckpt: Checkpoint) -> int:
    """Write the .mfz file atomically (`write_atomic`); returns the byte size."""
    return write_atomic(path, to_bytes(ckpt))


# --- load ---------------------------------------------------------------------------------------

def _read_verified(path) -> tuple[dict, memoryview, int]:
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: file not found")
    data = path.read_bytes()
    if len(data) < _PREFIX.size + 32:
        raise StorageError(f"{path}: too short for an .mfz file ({len(data)} bytes)")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise StorageError(f"{path}: not an .mfz file (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise StorageError(f"{path}: .mfz format version {version}, this library reads "
                           f"{FORMAT_VERSION}")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise StorageError(f"{path}: checksum mismatch (the file is truncated or altered)")
    try:
        header = json.loads(body[_PREFIX.size:_PREFIX.size + head_len].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StorageError(f"{path}: unreadable header ({err})") from None
    return header, memoryview(body), _PREFIX.size + head_len


def read_header(path) -> dict:
    """The JSON header of a verified .mfz file."""
    return _read_verified(path)[0]


def load(path) -> Checkpoint:
    """Rebuild a checkpoint: trained values from the file, frozen ones from (model, seed, init)."""
    header, body, offset = _read_verified(path)
    try:
        model = models.get_model(header["model"], **header.get("model_kwargs", {}))
        mode = header["mode"]
        theta0 = init.init_params(model, header["seed"], header["init"]) if mode == "freeze" else None
        params, buffers, masks = {}, {}, {}
        for e in header["tensors"]:
            shape, n = tuple(e["shape"]), int(np.prod(e["shape"]))
            if e["kind"] == "masked":
                m = decode_mask(e["encoding"], bytes(body[offset:offset + e["mask_bytes"]]),
                                shape, e["count"])
                offset += e["mask_bytes"]
                values = np.frombuffer(body, dtype="<f4", count=e["count"], offset=offset)
                value = (theta0[e["name"]].copy() if theta0 is not None
                         else np.zeros(shape, dtype=np.float32))
                value.reshape(-1)[np.flatnonzero(m)] = values
                masks[e["name"]] = m
            else:
                value = np.frombuffer(body, dtype="<f4", count=n, offset=offset).reshape(shape).copy()
            offset += e["value_bytes"]
            (buffers if e["group"] == "buffer" else params)[e["name"]] = value.astype(np.float32)
    except StorageError as err:
        raise StorageError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise StorageError(f"{path}: inconsistent .mfz contents ({type(err).__name__}: {err})") from None
    if offset != len(body):
        raise StorageError(f"{path}: {len(body) - offset} unexpected bytes after the tensors")
    if list(params) != list(model.param_shapes()):
        raise StorageError(f"{path}: tensors do not match model {model.name}")
    meta = {k: v for k, v in header.items()
            if k not in ("model", "model_kwargs", "init", "seed", "mode", "tensors")}
    return Checkpoint(header["model"], params, masks, buffers, header["seed"], header["init"],
                      mode, meta, header.get("model_kwargs", {}))


def describe(path) -> dict:
    """Header fields plus one row per tensor with its bytes, and the size breakdown."""
    header, _, head_end = _read_verified(path)
    rows, mask_total, value_total, n_total = [], 0, 0, 0
    for e in header["tensors"]:
        n = int(np.prod(e["shape"]))
        mb = e.get("mask_bytes", 0)
        trained = e.get("count", n)
        rows.append({"name": e["name"], "shape": e["shape"], "kind": e["kind"],
                     "encoding": e.get("encoding", "-"), "trained": trained, "total": n,
                     "mask_bytes": mb, "value_bytes": e["value_bytes"],
                     "dense_bytes": 4 * n})
        mask_total += mb
        value_total += e["value_bytes"]
        if e["group"] == "param":
            n_total += n
    size = Path(path).stat().st_size
    return {**{k: v for k, v in header.items() if k != "tensors"}, "tensors": rows,
            "file_bytes": size, "header_bytes": head_end, "mask_bytes": mask_total,
            "value_bytes": value_total, "checksum_bytes": 32, "dense_bytes": 4 * n_total}
