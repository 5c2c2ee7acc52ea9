"""Compact storage (`.mfz`): store what was trained, regenerate what was frozen from the seed.

A FreezeNet at q = 0.995 trains 0.5% of its weights; the rest are theta0, which one 32-bit seed
regenerates (`init.py`). So the file holds, per masked tensor, the mask and the trained values only,
and everything else is recomputed on load. A pruned network (SNIP) stores the same thing: its
non-selected entries are 0 instead of theta0.

Layout (integers little-endian):

    b"MFZ\\0"                          magic, 4 bytes
    uint16 version                     FORMAT_VERSION (2; version 1 files are read too)
    uint32 header_len, header          UTF-8 JSON: model (name, kwargs, architecture fingerprint),
                                       init scheme, seed, method, score, mode, rate, library
                                       version, frozen_sha256 (mode freeze), tensors (below)
    tensor payloads                    in header order
    32 bytes                           SHA-256 of everything before it

Each tensor entry in the header names its shape and kind:

    dense     float32 values, all of them (biases, batch norm, running statistics, dense models)
    masked    the mask, then float32 values of the entries with m == 1 in C order; the mask is the
              smaller of a packed bitmap (ceil(N / 8) bytes, `numpy.packbits`) and the gaps between
              successive kept flat indices (the first gap is the first index) as LEB128 varints,
              7 bits a byte, high bit set on all but a value's last byte
    leveled   an ELSA file's weights (`elsa.py`): the level at which each weight joined, then all
              N float32 values. The level map is the smaller of "nested" (for each level but the
              last, the flat indices that joined at it, delta-coded as above; the last level is
              the rest) and "packed" (ceil(log2 L) bits per weight, `numpy.packbits`)

    save(path, ckpt)       written to a temporary name in the same folder, then renamed (atomic)
    ckpt = load(path)      checks magic, version, lengths and checksum; validates the header
                           against the model; rebuilds params bit for bit
    describe(path)         what the file holds, tensor by tensor, and its size breakdown

(ELSA's levels, read from such a file: `elsa.level_rows`, `elsa.extract_level`.)

What the checksum protects against, and what it does not: the SHA-256 at the end detects accidents
(a truncated download, a flipped bit, a file cut off by a full disk). It is not a signature:
anyone can edit the header and recompute it. So the header is never trusted either: before
anything is allocated, every field is checked for its type and range (the model and its keyword
arguments, init scheme, mode, a 32-bit seed, method, rate, levels), and every tensor entry against
the model's own parameters and buffers (each name once, none missing, none unknown; the shape the
model gives; kind, encoding and counts; byte lengths that add up to the file's size). A lie is a
`StorageError` naming the field; memory stays bounded by the model's own size. A file whose
values were replaced by other valid float32 values, checksum recomputed, loads: such a file is a
different model, not a damaged one.

Notebook `06_pipeline` walks through this file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import numpy as np

from minifreeze import __version__, init, models

MAGIC = b"MFZ\0"
FORMAT_VERSION = 2
READS = (1, 2)
"""Versions this library reads. Version 2 adds two header fields that tie the file to what it
regenerates: `architecture` (the model's fingerprint) and, for mode freeze, `frozen_sha256`
(a SHA-256 of the float32 values of every entry with m == 0, which load regenerates from the
seed); version 1 files, which lack them, load without those two checks."""
_PREFIX = struct.Struct("<4sHI")  # magic, version, header length


class StorageError(ValueError):
    """An .mfz file is missing, truncated, altered or not an .mfz file."""


@dataclass
class Checkpoint:
    """Everything needed to rebuild a trained network, and to say how it was made."""
    model_name: str
    params: dict[str, np.ndarray]
    _: KW_ONLY  # the rest by name: ten fields, several of the same type, must not be swapped
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0
    init_scheme: str = "xavier"
    mode: str = "freeze"
    meta: dict = field(default_factory=dict)  # method, score, rate, ...
    model_kwargs: dict = field(default_factory=dict)
    levels: dict[str, np.ndarray] = field(default_factory=dict)
    """ELSA: per weight tensor, the level (1, 2, ...) at which each entry joined; meta["levels"]
    holds the rate of each level. Empty for every other method."""

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


def _level_bits(n_levels: int) -> int:
    return max(1, int(np.ceil(np.log2(n_levels))))


def encode_levels(lv: np.ndarray, n_levels: int) -> tuple[str, bytes, list[int]]:
    """The smaller of ("nested", delta-coded indices per level but the last) and ("packed",
    ceil(log2 L) bits per entry); also the count of entries at each level but the last."""
    flat = np.ravel(lv).astype(np.int64)  # (N,) levels 1..L
    counts = [int(np.count_nonzero(flat == level)) for level in range(1, n_levels)]
    parts = []
    for level in range(1, n_levels):
        idx = np.flatnonzero(flat == level).astype(np.uint64)
        parts.append(encode_varints(np.diff(idx, prepend=np.uint64(0)) if idx.size else idx))
    nested = b"".join(parts)
    bits = _level_bits(n_levels)
    codes = (flat - 1).astype(np.uint8)  # (N,) 0..L-1
    packed = np.packbits(((codes[:, None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8)
                         .reshape(-1)).tobytes()
    return ("nested", nested, counts) if len(nested) < len(packed) else ("packed", packed, counts)


def decode_levels(encoding: str, buf: bytes, shape: tuple[int, ...], counts: list[int],
                  n_levels: int) -> np.ndarray:
    """Inverse of encode_levels -> uint8 levels 1..L of `shape`, with the counts the header says."""
    n = int(np.prod(shape))
    if encoding == "packed":
        bits = _level_bits(n_levels)
        raw = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=n * bits)
        if raw.size != n * bits:
            raise StorageError(f"level map is {len(buf)} bytes, too short for {n} entries")
        codes = (raw.reshape(n, bits) << np.arange(bits - 1, -1, -1)).sum(axis=1)  # (N,)
        if codes.max(initial=0) >= n_levels:
            raise StorageError(f"level map holds a level above {n_levels}")
        flat = (codes + 1).astype(np.uint8)
    elif encoding == "nested":
        gaps = decode_varints(buf)
        if gaps.size != sum(counts):
            raise StorageError(f"level map lists {gaps.size} indices, the header says "
                               f"{sum(counts)}")
        flat = np.full(n, n_levels, dtype=np.uint8)
        start = 0
        for level, k in enumerate(counts, 1):
            idx = np.cumsum(gaps[start:start + k])  # (k,)
            start += k
            if idx.size and (idx[-1] >= n or (np.diff(idx) == 0).any()):
                raise StorageError(f"level {level}'s indices do not fit a tensor of shape {shape}")
            if (flat[idx.astype(np.int64)] != n_levels).any():
                raise StorageError(f"level map names an entry at two levels")
            flat[idx.astype(np.int64)] = level
    else:
        raise StorageError(f"unknown level-map encoding {encoding!r}")
    got = [int(np.count_nonzero(flat == level)) for level in range(1, n_levels)]
    if got != list(counts):
        raise StorageError(f"level map has {got} entries per level, the header says {counts}")
    return flat.reshape(shape)


# --- save ---------------------------------------------------------------------------------------

def _payloads(ckpt: Checkpoint):
    """(header entry, payload bytes) per tensor: params in model order, then buffers."""
    n_levels = len(ckpt.meta.get("levels", ())) if ckpt.levels else 0
    for name, value in list(ckpt.params.items()) + list(ckpt.buffers.items()):
        value = np.ascontiguousarray(value, dtype=np.float32)
        entry = {"name": name, "shape": list(value.shape),
                 "group": "buffer" if name in ckpt.buffers else "param"}
        if name in ckpt.levels:
            encoding, level_bytes, counts = encode_levels(ckpt.levels[name], n_levels)
            entry.update(kind="leveled", encoding=encoding, level_bytes=len(level_bytes),
                         level_counts=counts, value_bytes=value.nbytes)
            yield entry, level_bytes + value.tobytes()
        elif name in ckpt.masks:
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
    """The .mfz encoding of a checkpoint (its tensors in the model's order)."""
    model = ckpt.model()
    for what, have, want in (("parameters", ckpt.params, model.param_shapes()),
                             ("buffers", ckpt.buffers, model.buffer_shapes())):
        if set(have) != set(want) or any(np.shape(have[k]) != s for k, s in want.items()):
            raise StorageError(f"checkpoint {what} do not match model {model.name}: expected "
                               f"{dict(want)}, got { {k: np.shape(v) for k, v in have.items()} }")
    ckpt = dataclasses.replace(ckpt, params={k: ckpt.params[k] for k in model.param_shapes()},
                               buffers={k: ckpt.buffers[k] for k in model.buffer_shapes()})
    if ckpt.mode not in ("freeze", "prune"):
        raise StorageError(f"mode: expected freeze or prune, got {ckpt.mode!r}")
    entries, blobs = [], []
    for entry, blob in _payloads(ckpt):
        entries.append(entry)
        blobs.append(blob)
    derived = {"architecture": model.fingerprint()}
    if ckpt.mode == "freeze":
        theta0 = init.init_params(model, ckpt.seed, ckpt.init_scheme)
        for name, m in ckpt.masks.items():
            off = np.asarray(m) == 0
            got = np.asarray(ckpt.params[name], dtype=np.float32)[off]
            if got.tobytes() != theta0[name][off].tobytes():
                raise StorageError(f"mode freeze, but {name} holds values other than theta0 "
                                   f"(seed {ckpt.seed}, {ckpt.init_scheme}) where m == 0: the "
                                   f"file would load different weights")
        derived["frozen_sha256"] = frozen_digest(ckpt.params, ckpt.masks)
    header = {"model": ckpt.model_name, "model_kwargs": ckpt.model_kwargs,
              "init": ckpt.init_scheme, "seed": init.check_seed(ckpt.seed), "mode": ckpt.mode,
              **ckpt.meta, "library_version": __version__,  # the writer's, also on a re-save
              **derived, "tensors": entries}
    head = json.dumps(header, sort_keys=True).encode()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head + b"".join(blobs)
    return body + hashlib.sha256(body).digest()


def frozen_digest(params, masks) -> str:
    """SHA-256 of the float32 bytes of every entry with m == 0, tensor after tensor (in the
    order of `masks`), entries in C order: what a freeze file regenerates from its seed."""
    h = hashlib.sha256()
    for name, m in masks.items():
        h.update(np.ascontiguousarray(params[name], dtype="<f4")[np.asarray(m) == 0].tobytes())
    return h.hexdigest()


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
    if version not in READS:
        raise StorageError(f"{path}: .mfz format version {version}, this library reads "
                           f"{', '.join(map(str, READS))}")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise StorageError(f"{path}: checksum mismatch (the file is truncated or altered)")
    if _PREFIX.size + head_len > len(body):
        raise StorageError(f"{path}: header length {head_len} runs past the end of the file")
    try:
        header = json.loads(body[_PREFIX.size:_PREFIX.size + head_len].decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise StorageError(f"{path}: unreadable header ({err})") from None
    if isinstance(header, dict):
        header["_version"] = version  # for validate_header; never written back
    return header, memoryview(body), _PREFIX.size + head_len


def read_header(path) -> dict:
    """The JSON header of a verified .mfz file (checked: see `validate_header`)."""
    header, body, offset = _read_verified(path)
    try:
        validate_header(header, len(body) - offset)
    except StorageError as err:
        raise StorageError(f"{path}: {err}") from None
    return header


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _field(ok: bool, name: str, expected: str, got) -> None:
    if not ok:
        text = repr(got)
        raise StorageError(f"header field {name}: expected {expected}, got "
                           f"{text if len(text) <= 80 else text[:77] + '...'}")


def validate_header(header, payload_bytes: int) -> models.Model:
    """Check every header field against its type and range and every tensor entry against the
    model, before anything is allocated; returns the model. `payload_bytes`: the bytes between
    the header and the checksum. Raises StorageError naming the first field that lies."""
    model = _check_fields(header)
    levels = header.get("levels")
    tensors = header["tensors"]
    _field(isinstance(tensors, list), "tensors", "a list", type(tensors).__name__)
    params, buffers = model.param_shapes(), model.buffer_shapes()
    want = [(k, "param") for k in params] + [(k, "buffer") for k in buffers]
    total = sum(_tensor_bytes(i, e, want, {**params, **buffers}, levels)
                for i, e in enumerate(tensors))
    _field(len(tensors) == len(want), "tensors", f"{len(want)} entries", len(tensors))
    _field(total == payload_bytes, "tensors", f"byte lengths adding up to the {payload_bytes} "
           f"payload bytes in the file", total)
    _check_rates(header, tensors)
    return model


def _check_fields(header) -> models.Model:
    """The header's own fields (everything but the tensor entries); returns the model."""
    _field(isinstance(header, dict), "header", "a JSON object", type(header).__name__)
    for key in ("model", "init", "seed", "mode", "tensors"):
        _field(key in header, key, "present", None)
    _field(isinstance(header["model"], str) and header["model"] in models.MODELS, "model",
           f"one of {', '.join(models.MODELS)}", header["model"])
    kwargs = header.get("model_kwargs", {})
    try:
        models.check_kwargs(header["model"], kwargs)
    except ValueError as err:
        raise StorageError(f"header field model_kwargs: {err}") from None
    model = models.get_model(header["model"], **kwargs)
    version = header.get("_version", FORMAT_VERSION)
    if version >= 2 or "architecture" in header:
        _field(header.get("architecture") == model.fingerprint(), "architecture",
               f"{model.fingerprint()} (the fingerprint of {model.name} with these model_kwargs)",
               header.get("architecture"))
    _field(header["init"] in init.SCHEMES, "init", f"one of {', '.join(init.SCHEMES)}",
           header["init"])
    _field(_is_int(header["seed"]) and 0 <= header["seed"] < 2**32, "seed",
           "an integer in [0, 2**32)", header["seed"])
    _field(header["mode"] in ("freeze", "prune"), "mode", "freeze or prune", header["mode"])
    if version >= 2 or "frozen_sha256" in header:
        frozen = header.get("frozen_sha256")
        if header["mode"] == "freeze":
            _field(isinstance(frozen, str) and len(frozen) == 64, "frozen_sha256",
                   "the 64 hex digits a freeze file carries", frozen)
        else:
            _field(frozen is None, "frozen_sha256", "absent (a pruned file freezes nothing)",
                   frozen)
    for key in ("score", "scope"):
        if header.get(key) is not None:
            _field(isinstance(header[key], str), key, "a name", header[key])
    if "include_biases" in header:
        _field(isinstance(header["include_biases"], bool), "include_biases", "true or false",
               header["include_biases"])
    if "config" in header:
        _field(isinstance(header["config"], dict), "config", "an object", header["config"])
    if "method" in header:
        _field(isinstance(header["method"], str) and 0 < len(header["method"]) <= 64, "method",
               "a name (a string of 1 to 64 characters)", header["method"])
    if "rate" in header:
        _field(_is_number(header["rate"]) and 0 <= header["rate"] < 1, "rate",
               "a number in [0, 1)", header["rate"])
    if "library_version" in header:
        _field(isinstance(header["library_version"], str), "library_version", "a string",
               header["library_version"])
    if "dataset" in header:
        _field(isinstance(header["dataset"], str), "dataset", "a string", header["dataset"])
    levels = header.get("levels")
    if levels is not None:
        _field(isinstance(levels, list) and len(levels) >= 2 and all(map(_is_number, levels))
               and all(0 <= q < 1 for q in levels) and levels[-1] == 0
               and all(a > b for a, b in zip(levels, levels[1:])), "levels",
               "rates in [0, 1), strictly decreasing, the last 0 (dense)", levels)
    return model


def _tensor_bytes(i: int, e, want: list, shapes: dict, levels) -> int:
    """Check tensor entry i against the model (`want`: (name, group) in file order, `shapes`:
    every tensor's shape); returns the payload bytes it claims."""
    where = f"tensors[{i}]"
    _field(isinstance(e, dict) and isinstance(e.get("name"), str), f"{where}.name",
           "a tensor name", e.get("name") if isinstance(e, dict) else e)
    where = f"tensors[{i}] ({e['name']})"
    _field(i < len(want) and (e["name"], e.get("group")) == want[i], f"{where}",
           f"{want[i][1]} {want[i][0]!r}" if i < len(want) else "no more tensors",
           [e["name"], e.get("group")])
    shape = shapes[e["name"]]
    _field(e.get("shape") == list(shape), f"{where}.shape", list(shape), e.get("shape"))
    n = int(np.prod(shape))
    kind = e.get("kind")
    _field(kind in ("dense", "masked", "leveled"), f"{where}.kind",
           "dense, masked or leveled", kind)
    _field(_is_int(e.get("value_bytes")), f"{where}.value_bytes", "a whole number",
           e.get("value_bytes"))
    if kind == "dense":
        _field(e["value_bytes"] == 4 * n, f"{where}.value_bytes", 4 * n, e["value_bytes"])
        return 4 * n
    elif kind == "masked":
        _field(e.get("encoding") in ("bitmap", "delta"), f"{where}.encoding",
               "bitmap or delta", e.get("encoding"))
        count = e.get("count")
        _field(_is_int(count) and 0 <= count <= n, f"{where}.count", f"0 to {n}", count)
        _field(e["value_bytes"] == 4 * count, f"{where}.value_bytes", 4 * count,
               e["value_bytes"])
        mb = e.get("mask_bytes")
        if e["encoding"] == "bitmap":
            _field(mb == (n + 7) // 8, f"{where}.mask_bytes", (n + 7) // 8, mb)
        else:
            _field(_is_int(mb) and count <= mb <= 10 * count, f"{where}.mask_bytes",
                   f"{count} to {10 * count} (1 to 10 bytes per kept index)", mb)
        return mb + 4 * count
    else:
        _field(levels is not None and e["group"] == "param", f"{where}.kind",
               "leveled only for a parameter of a file with levels", kind)
        _field(e["value_bytes"] == 4 * n, f"{where}.value_bytes", 4 * n, e["value_bytes"])
        counts = e.get("level_counts")
        _field(isinstance(counts, list) and len(counts) == len(levels) - 1
               and all(_is_int(c) and c >= 0 for c in counts) and sum(counts) <= n,
               f"{where}.level_counts", f"{len(levels) - 1} counts adding up to at most {n}",
               counts)
        lb = e.get("level_bytes")
        enc = e.get("encoding")
        _field(enc in ("nested", "packed"), f"{where}.encoding", "nested or packed", enc)
        if enc == "packed":
            want_b = (n * _level_bits(len(levels)) + 7) // 8
            _field(lb == want_b, f"{where}.level_bytes", want_b, lb)
        else:
            _field(_is_int(lb) and sum(counts) <= lb <= 10 * sum(counts),
                   f"{where}.level_bytes", "1 to 10 bytes per listed index", lb)
        return lb + 4 * n


def _check_rates(header, tensors) -> None:
    """The rate (and an ELSA file's level rates) must say what the masks (level maps) hold:
    round((1 - q) N) entries kept over the masked (leveled) tensors, as the selection made them."""
    from minifreeze.masks import keep_count
    masked = [e for e in tensors if e["kind"] == "masked"]
    leveled = [e for e in tensors if e["kind"] == "leveled"]
    n_masked = sum(int(np.prod(e["shape"])) for e in masked)
    if "rate" in header and not leveled:
        kept = sum(e["count"] for e in masked)
        want = keep_count(n_masked, header["rate"]) if masked else None
        _field((kept == want) if masked else header["rate"] == 0, "rate",
               f"a rate that keeps the {kept:,} of {n_masked:,} masked entries the file holds"
               if masked else "0 (the file has no masks)", header["rate"])
    levels = header.get("levels")
    if levels is not None:
        _field(bool(leveled) and not masked, "levels",
               "a file whose weights are all leveled", levels)
        n = sum(int(np.prod(e["shape"])) for e in leveled)
        kept = 0
        for i, q in enumerate(levels[:-1]):
            kept += sum(e["level_counts"][i] for e in leveled)
            _field(kept == keep_count(n, q), f"levels[{i}]",
                   f"a rate that keeps the {kept:,} of {n:,} weights of level {i + 1}", q)


def load(path) -> Checkpoint:
    """Rebuild a checkpoint: trained values from the file, frozen ones from (model, seed, init).
    The header is validated against the model first (`validate_header`)."""
    header, body, offset = _read_verified(path)
    try:
        model = validate_header(header, len(body) - offset)
        mode = header["mode"]
        n_levels = len(header.get("levels") or ())
        theta0 = init.init_params(model, header["seed"], header["init"]) if mode == "freeze" else None
        params, buffers, masks, levels = {}, {}, {}, {}
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
                if e["kind"] == "leveled":
                    levels[e["name"]] = decode_levels(
                        e["encoding"], bytes(body[offset:offset + e["level_bytes"]]), shape,
                        e["level_counts"], n_levels)
                    offset += e["level_bytes"]
                value = np.frombuffer(body, dtype="<f4", count=n, offset=offset).reshape(shape).copy()
            offset += e["value_bytes"]
            (buffers if e["group"] == "buffer" else params)[e["name"]] = value.astype(np.float32)
    except StorageError as err:
        raise StorageError(f"{path}: {err}") from None
    if offset != len(body):
        raise StorageError(f"{path}: {len(body) - offset} unexpected bytes after the tensors")
    if mode == "freeze" and header.get("frozen_sha256") is not None and \
            frozen_digest(params, masks) != header["frozen_sha256"]:
        raise StorageError(f"{path}: the frozen weights regenerated from seed {header['seed']} "
                           f"({header['init']}) do not match the file's frozen_sha256: its seed, "
                           f"init or masks were changed")
    meta = {k: v for k, v in header.items()
            if k not in ("model", "model_kwargs", "init", "seed", "mode", "tensors", "_version",
                         "architecture", "frozen_sha256")}
    return Checkpoint(header["model"], params, masks=masks, buffers=buffers, seed=header["seed"],
                      init_scheme=header["init"], mode=mode, meta=meta,
                      model_kwargs=header.get("model_kwargs", {}), levels=levels)


def describe(path) -> dict:
    """Header fields plus one row per tensor with its bytes, and the size breakdown; for an ELSA
    file also one row per level (`levels`: rate, weights kept, bytes of its part of the level
    map, and the bytes one mask per level would take instead)."""
    header, body, head_end = _read_verified(path)
    try:
        validate_header(header, len(body) - head_end)
    except StorageError as err:
        raise StorageError(f"{path}: {err}") from None
    rows, mask_total, value_total, n_total = [], 0, 0, 0
    for e in header["tensors"]:
        n = int(np.prod(e["shape"]))
        mb = e.get("mask_bytes", e.get("level_bytes", 0))
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
    info = {**{k: v for k, v in header.items() if k not in ("tensors", "_version")},
            "format_version": header["_version"], "tensors": rows,
            "file_bytes": size, "header_bytes": head_end, "mask_bytes": mask_total,
            "value_bytes": value_total, "checksum_bytes": 32, "dense_bytes": 4 * n_total}
    return info


def stored_sizes(path, params: dict[str, np.ndarray]) -> dict[str, int]:
    """What a trained network costs to store, in bytes: `gzip_bytes`, its .mfz file at `path`
    gzipped (seed + mask indices + trained values: frozen or pruned alike), and
    `dense_gzip_bytes`, every parameter as float32 (the dense alternative, `4 * N` bytes) gzipped
    (a pruned network's zeros compress there; a frozen one's random values hardly do). gzip at
    level 9 with no timestamp, so the same bytes give the same size."""
    import gzip
    dense = b"".join(np.ascontiguousarray(v, dtype=np.float32).tobytes() for v in params.values())
    return {"gzip_bytes": len(gzip.compress(Path(path).read_bytes(), 9, mtime=0)),
            "dense_gzip_bytes": len(gzip.compress(dense, 9, mtime=0))}
