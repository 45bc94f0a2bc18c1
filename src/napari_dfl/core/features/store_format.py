"""The embedding store's on-disk format: its files, errors, JSON metadata and checks.

:mod:`napari_dfl.core.features.store` holds the
:class:`~napari_dfl.core.features.store.EmbeddingStore`
itself; this module holds what both it and its callers need to know about the files: the
names and format version, the errors, canonical JSON (identities are compared and hashed in
it) and the validation of a store's metadata and arrays. Where stores live and how they
are named: :mod:`napari_dfl.core.features.store_folder`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.util import atomic

STORE_FORMAT_VERSION = 1
META_FILE = "dfl_store.json"
COMMIT_FILE = "dfl_commit.json"
FORMAT_NAME = "napari-dfl embedding store"
COORDS_CHUNK_ROWS = 8192
_TARGET_CHUNK_BYTES = 4 * 2**20
_INT32 = (-(2**31), 2**31 - 1)
_ABSENT = object()


class StoreError(DFLError):
    """Base class of embedding-store errors."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """There is no store at the given path."""


class CorruptStoreError(StoreError):
    """The store's metadata or arrays are missing or unreadable."""


class ReadOnlyStoreError(StoreError):
    """A write was attempted on a store opened with ``EmbeddingStore.open``."""


class StoreMismatchError(StoreError):
    """An existing store was written by another extractor (identity or dim differ).

    Attributes:
        differences: ``(dotted_key, stored_value, requested_value)`` for each difference.

    """

    def __init__(self, message: str, differences: list[tuple[str, Any, Any]]) -> None:
        super().__init__(message)
        self.differences = differences


class MissingEmbeddingsError(StoreError, KeyError):
    """Some requested coordinates have no embedding in the store.

    Attributes:
        missing: (K, 2) int64 coordinates that are not in the store.

    """

    def __init__(self, message: str, missing: np.ndarray) -> None:
        super().__init__(message)
        self.missing = missing

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# --------------------------------------------------------------------------- JSON helpers


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def normalise_json(value: Any, what: str) -> Any:
    """Return ``value`` as it reads back from JSON (tuples become lists, numpy scalars numbers)."""
    try:
        text = json.dumps(value, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"The store {what} must be JSON-serialisable (str, int, float, bool, None, lists "
            f"and dicts with str keys; no NaN): {exc}."
        ) from exc
    return json.loads(text)


def write_json(path: Path, obj: Any) -> None:
    """Write one of the store's JSON files atomically (sorted keys: stable, diff-friendly)."""
    atomic.write_json(path, obj, sort_keys=True)


def write_commit(store_dir: Path, count: int) -> None:
    """Record ``count`` committed rows (the single point where appended rows become visible)."""
    write_json(store_dir / COMMIT_FILE, {"count": int(count)})


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b  # JSON numbers: 2 and 2.0 are the same number
    return type(a) is type(b) and a == b


def json_diff(stored: Any, wanted: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted paths (into nested dicts) where ``stored`` and ``wanted`` differ."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(stored) | set(wanted)):
            path = f"{prefix}.{key}" if prefix else str(key)
            out.extend(json_diff(stored.get(key, _ABSENT), wanted.get(key, _ABSENT), path))
        return out
    if stored is not _ABSENT and wanted is not _ABSENT and _equal(stored, wanted):
        return []
    return [(prefix or "identity", stored, wanted)]


def show_value(value: Any, limit: int = 80) -> str:
    """A value for an error message, shortened to ``limit`` characters."""
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- coordinates


def as_coords(coords: Any, what: str = "coords") -> np.ndarray:
    """``coords`` as an ``(N, 2)`` int64 array of level-0 ``(x, y)``; raises StoreError."""
    arr = np.asarray(coords)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise StoreError(f"{what} must have shape (N, 2) of level-0 (x, y); got {arr.shape}.")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise StoreError(f"{what} must be integers (level-0 pixels); got dtype {arr.dtype}.")
    return arr.astype(np.int64, copy=False)


def pack_coords(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One int64 key per (x, y), and a mask of coords inside the int32 range keys can hold."""
    inside = np.all((coords >= _INT32[0]) & (coords <= _INT32[1]), axis=1)
    safe = np.where(inside[:, None], coords, 0)
    keys = (safe[:, 0] << 32) | (safe[:, 1] & 0xFFFFFFFF)
    return keys, inside


def positive_int(value: Any) -> bool:
    """Whether ``value`` is a positive integer (bools excluded)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


def auto_chunk_rows(dim: int) -> int:
    """Rows per embeddings chunk: about 4 MB, a power of two between 64 and 4096."""
    rows = max(1, _TARGET_CHUNK_BYTES // (4 * dim))
    return int(min(4096, max(64, 2 ** int(np.floor(np.log2(rows))))))


# --------------------------------------------------------------------------- the store


def read_json(path: Path, advice: str) -> dict[str, Any]:
    """Read one of the store's JSON files; CorruptStoreError (with ``advice``) if unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise CorruptStoreError(f"Embedding store file {path} is missing. {advice}") from exc
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(
            f"Embedding store file {path} is garbled ({exc}). {advice}"
        ) from exc
    if not isinstance(data, dict):
        raise CorruptStoreError(f"Embedding store file {path} is not a JSON object. {advice}")
    return data


def meta_checksum(meta: dict[str, Any]) -> str:
    """sha256 of a store's metadata (its canonical JSON without the checksum itself).

    Written with the metadata; a hand edit that does not recompute it (another backbone
    named in the identity, say) is found when the store is opened.
    """
    body = {k: v for k, v in meta.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def check_meta(meta: dict[str, Any], commit: dict[str, Any]) -> str | None:
    """What is wrong with a store's metadata and commit files, or None."""
    if meta.get("format") != FORMAT_NAME:
        return f"{META_FILE} does not describe a napari-dfl embedding store"
    if "checksum" in meta and meta["checksum"] != meta_checksum(meta):
        return (f"{META_FILE} was changed after the store was written (its checksum does not "
                "match), so what it says made these embeddings (backbone, composition, slide) "
                "cannot be trusted")
    for key, kind in (
        ("format_version", int),
        ("dim", int),
        ("chunk_rows", int),
        ("identity", dict),
        ("attrs", dict),
    ):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return f"{META_FILE} has no valid {key!r}"
    if meta["dim"] <= 0 or meta["chunk_rows"] <= 0:
        return f"{META_FILE} has a non-positive dim or chunk_rows"
    count = commit.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return f"{COMMIT_FILE} has no valid 'count'"
    return None


def check_arrays(path: Path, emb: Any, crd: Any, dim: int, count: int) -> str | None:
    """What is wrong with a store's arrays (types, shapes, committed chunks), or None."""
    if emb.ndim != 2 or emb.shape[1] != dim or emb.dtype != np.float32:
        return f"'embeddings' is {emb.dtype} {emb.shape}, expected float32 (N, {dim})"
    if crd.ndim != 2 or crd.shape[1] != 2 or crd.dtype != np.int64:
        return f"'coords' is {crd.dtype} {crd.shape}, expected int64 (N, 2)"
    if emb.shape[0] < count or crd.shape[0] < count:
        return f"the arrays hold fewer rows than the {count} committed"
    for name, arr in (("embeddings", emb), ("coords", crd)):
        raw = arr.chunks[0] * arr.chunks[1] * arr.dtype.itemsize
        bound = raw + raw // 128 + 4096  # zstd never grows data by more than this
        for i in range(-(-count // arr.chunks[0])):
            chunk = path / name / "c" / str(i) / "0"
            if not chunk.is_file():
                return f"chunk {i} of {name!r} is missing or not a regular file"
            size = chunk.stat().st_size
            if size > bound:  # decoding it would read and allocate all of it
                return (f"chunk {i} of {name!r} is {size:,} bytes where at most {bound:,} "
                        "can be valid")
    return None
