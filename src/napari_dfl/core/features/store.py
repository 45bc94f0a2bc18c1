"""The resumable embedding store: one zarr directory per slide, backbone and composition.

A store holds, for each sample, the level-0 ``(x, y)`` top-left corner of its working
magnification patch and its embedding. Rows are appended as the extractor produces them and
become visible only once a small commit file records the new row count, written atomically
(temporary file + ``os.replace``). Rows past the committed count are invisible and are
overwritten by the next append, so a crash or a cancel never corrupts rows already committed,
and a rerun computes only what is missing. See ``docs/store.md``.

Layout of ``<name>.dfl.zarr/`` (a zarr v3 group)::

    zarr.json          zarr group metadata
    embeddings/        (capacity, dim) float32, chunks (chunk_rows, dim)
    coords/            (capacity, 2) int64, level-0 (x, y)
    dfl_store.json     format version, identity, dim, chunk_rows, user attrs
    dfl_commit.json    {"count": N}: the number of valid rows
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dfl.core.features.store_format import (
    COMMIT_FILE,
    COORDS_CHUNK_ROWS,
    FORMAT_NAME,
    META_FILE,
    STORE_FORMAT_VERSION,
    CorruptStoreError,
    MissingEmbeddingsError,
    ReadOnlyStoreError,
    StoreError,
    StoreMismatchError,
    StoreNotFoundError,
    as_coords,
    auto_chunk_rows,
    check_arrays,
    check_meta,
    json_diff,
    meta_checksum,
    normalise_json,
    pack_coords,
    positive_int,
    read_json,
    show_value,
    write_commit,
    write_json,
)

if TYPE_CHECKING:
    import dask.array

__all__ = [
    "STORE_FORMAT_VERSION",
    "CorruptStoreError",
    "EmbeddingStore",
    "MissingEmbeddingsError",
    "ReadOnlyStoreError",
    "StoreError",
    "StoreMismatchError",
    "StoreNotFoundError",
]


#: Rows of each store (by resolved path) whose chunks this process decoded or wrote.
_CHECKED: dict[str, int] = {}


class EmbeddingStore:
    """A resumable, append-only table of (level-0 coords, embedding) rows on disk.

    Create or reopen one with ``create_or_open`` (read-write) or ``open`` (read-only); do not
    call the constructor. One writer per store at a time; any number of readers.

    Attributes:
        path: the store directory.
        identity: the extractor's identity (opaque JSON: slide, backbone, composition, ...).
        dim: embedding dimension D.
        chunk_rows: rows per chunk of the embeddings array.
        read_only: True for stores opened with ``open``.

    """

    def __init__(self, path: Path, meta: dict[str, Any], count: int, arrays: Any, ro: bool):
        self.path = path
        self.identity: dict[str, Any] = meta["identity"]
        self.dim: int = int(meta["dim"])
        self.chunk_rows: int = int(meta["chunk_rows"])
        self.read_only = ro
        self._attrs: dict[str, Any] = dict(meta.get("attrs", {}))
        self._count = count
        self._emb, self._coords_arr = arrays
        self._coords_cache: np.ndarray | None = None  # grown buffer; rows [:count] valid
        self._index: dict[int, int] | None = None
        self._lock = threading.RLock()

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def create_or_open(
        cls,
        path: str | os.PathLike[str],
        identity: dict[str, Any],
        dim: int,
        chunk_rows: int | None = None,
    ) -> EmbeddingStore:
        """Create a store, or reopen an existing one written by the same extractor.

        Args:
            path: the store directory (see
                :func:`~napari_dfl.core.features.store_folder.store_path_for`).
            identity: JSON-serialisable description of what produced the embeddings.
            dim: embedding dimension D.
            chunk_rows: rows per chunk of the embeddings array. Default: about 4 MiB per
                chunk (64 to 4096 rows), because every append rewrites its last chunk.

        Returns:
            The store, open for appending.

        Raises:
            StoreMismatchError: the existing store has another identity or dim.
            CorruptStoreError: the path holds something that is not a readable store.

        """
        path = Path(path)
        identity = normalise_json(identity, "identity")
        if not isinstance(identity, dict):
            raise StoreError(f"The store identity must be a dict; got {type(identity).__name__}.")
        if not positive_int(dim):
            raise StoreError(f"Embedding dim must be a positive integer; got {dim!r}.")
        dim = int(dim)
        if chunk_rows is not None and not positive_int(chunk_rows):
            raise StoreError(f"chunk_rows must be a positive integer; got {chunk_rows!r}.")
        if not (path / META_FILE).exists():
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()  # an empty folder: create the store in its place
            if not path.exists():
                rows = int(chunk_rows) if chunk_rows else auto_chunk_rows(dim)
                cls._create(path, identity, dim, rows)
        store = cls._open(path, read_only=False)
        differences = json_diff(store.identity, identity)
        if store.dim != dim:
            differences.append(("dim", store.dim, dim))
        if differences:
            listed = "; ".join(
                f"{key} is {show_value(old)} in the store but {show_value(new)} now"
                for key, old, new in differences
            )
            raise StoreMismatchError(
                f"The embedding store {path} was written by a different extractor: {listed}. "
                f"Use another --out folder, or delete {path} to recompute.",
                differences,
            )
        store.check_chunks()
        return store

    def check_chunks(self) -> None:
        """Decode every committed chunk once (zstd checks its content checksum).

        Appending only touches the last chunk, so a damaged chunk elsewhere would otherwise
        pass unnoticed while the store grows. Chunks checked (or written) by this process
        are not decoded again.

        Raises:
            CorruptStoreError: naming the damaged chunk and its rows.

        """
        key = str(self.path.resolve())
        rows = self._emb.chunks[0]
        start = _CHECKED.get(key, 0) // rows
        for i in range(start, -(-self._count // rows)):
            try:
                self._emb[i * rows:min(self._count, (i + 1) * rows)]
            except Exception as exc:
                raise CorruptStoreError(
                    f"Embedding store {self.path} is damaged: chunk {i} of its embeddings "
                    f"(rows {i * rows}-{min(self._count, (i + 1) * rows) - 1}) cannot be "
                    f"decoded ({type(exc).__name__}). Delete {self.path} and embed again."
                ) from exc
        self._load_coords()  # decodes every coordinate chunk
        _CHECKED[key] = self._count

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EmbeddingStore:
        """Open an existing store read-only.

        Raises:
            StoreNotFoundError: nothing at ``path``.
            CorruptStoreError: the metadata or arrays are missing or unreadable.

        """
        return cls._open(Path(path), read_only=True)

    @classmethod
    def _create(cls, path: Path, identity: dict[str, Any], dim: int, chunk_rows: int) -> None:
        import zarr
        from zarr.codecs import ZstdCodec
        from zarr.storage import LocalStore

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.creating")
        try:
            group = zarr.open_group(LocalStore(tmp), mode="w")
            # zstd with its content checksum: a damaged chunk fails to read instead of
            # returning wrong numbers.
            codec = ZstdCodec(level=0, checksum=True)
            group.create_array(
                "embeddings",
                shape=(0, dim),
                chunks=(chunk_rows, dim),
                dtype="float32",
                compressors=codec,
            )
            group.create_array(
                "coords",
                shape=(0, 2),
                chunks=(COORDS_CHUNK_ROWS, 2),
                dtype="int64",
                compressors=codec,
            )
            meta = {
                "format": FORMAT_NAME,
                "format_version": STORE_FORMAT_VERSION,
                "identity": identity,
                "dim": dim,
                "chunk_rows": chunk_rows,
                "attrs": {},
            }
            meta["checksum"] = meta_checksum(meta)
            write_json(tmp / META_FILE, meta)
            write_json(tmp / COMMIT_FILE, {"count": 0})
            try:
                os.rename(tmp, path)  # the store appears complete or not at all
            except OSError:
                if not (path / META_FILE).exists():  # not a concurrent creator: a real error
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def _open(cls, path: Path, read_only: bool) -> EmbeddingStore:
        import zarr
        from zarr.storage import LocalStore

        if not path.exists():
            raise StoreNotFoundError(f"No embedding store at {path}; check the path.")
        advice = f"Delete {path} and embed again (or choose another --out folder)."
        if not (path / META_FILE).is_file():
            kind = "damaged store" if (path / "zarr.json").exists() else "folder"
            kind = "file" if path.is_file() else kind
            raise CorruptStoreError(
                f"{path} is a {kind} without {META_FILE}, not a napari-dfl embedding store. "
                + advice
            )
        meta = read_json(path / META_FILE, advice)
        commit = read_json(path / COMMIT_FILE, advice)
        problem = check_meta(meta, commit)
        if problem:
            raise CorruptStoreError(f"Embedding store {path} is damaged: {problem}. " + advice)
        if meta["format_version"] > STORE_FORMAT_VERSION:
            raise StoreError(
                f"Embedding store {path} has format version {meta['format_version']}, newer "
                f"than this napari-dfl understands ({STORE_FORMAT_VERSION}); upgrade napari-dfl."
            )
        count, dim = int(commit["count"]), int(meta["dim"])
        try:
            mode = "r" if read_only else "r+"
            group = zarr.open_group(LocalStore(path, read_only=read_only), mode=mode)
            emb = group["embeddings"].with_config({"write_empty_chunks": True})
            crd = group["coords"].with_config({"write_empty_chunks": True})
        except Exception as exc:
            raise CorruptStoreError(
                f"Embedding store {path} has unreadable arrays ({exc}). " + advice
            ) from exc
        problem = check_arrays(path, emb, crd, dim, count)
        if problem:
            raise CorruptStoreError(f"Embedding store {path} is damaged: {problem}. " + advice)
        return cls(path, meta, count, (emb, crd), read_only)

    # ---- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        """Return the number of committed rows."""
        return self._count

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"EmbeddingStore({str(self.path)!r}, rows={len(self)}, dim={self.dim}, {mode})"

    @property
    def attrs(self) -> dict[str, Any]:
        """A copy of the free-form user attributes (tile size, mpp, slide name, ...)."""
        return json.loads(json.dumps(self._attrs))

    @property
    def coords(self) -> np.ndarray:
        """(N, 2) int64 level-0 (x, y) top-left of each row's working-magnification patch.

        A read-only view of an in-memory cache; copy it before modifying.
        """
        with self._lock:
            view = self._load_coords()[: self._count]
        view.flags.writeable = False
        return view

    def embeddings(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Read embeddings of committed rows as float32.

        Args:
            rows: None for all rows, a slice, an integer index array (any order, repeats
                allowed, no negatives) or a boolean mask of length ``len(self)``.

        Returns:
            (M, D) float32 array.

        """
        n = self._count
        if rows is None:
            rows = slice(0, n)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n)
            if step == 1:
                return self._read(lambda: self._emb[start : max(start, stop)])
            rows = np.arange(start, stop, step)
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise StoreError(f"A boolean row mask must have shape ({n},); got {idx.shape}.")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise StoreError(f"rows must be a 1-D integer array; got {idx.dtype} {idx.shape}.")
        if idx.size == 0:
            return np.empty((0, self.dim), np.float32)
        if idx.min() < 0 or idx.max() >= n:
            raise StoreError(
                f"Row indices must lie in [0, {n}); got {int(idx.min())}..{int(idx.max())}. "
                "lookup() returns -1 for coordinates not in the store: use get() or missing()."
            )
        unique, inverse = np.unique(idx, return_inverse=True)
        block = self._read(lambda: self._emb.get_orthogonal_selection((unique, slice(None))))
        return block[inverse.reshape(-1)]

    def to_dask(self, rows: int | None = None) -> dask.array.Array:
        """Return the committed embeddings as a lazy ``dask.array.Array`` of shape (N, D).

        Args:
            rows: rows per dask chunk; default ``chunk_rows`` (rounded up to a multiple of it).

        """
        import dask.array as da

        step = self.chunk_rows * max(1, -(-(rows or self.chunk_rows) // self.chunk_rows))
        return da.from_array(self._emb, chunks=(step, self.dim))[: self._count]

    def iter_chunks(self, rows: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(coords, embeddings)`` blocks of the committed rows, in order.

        Args:
            rows: rows per block; default ``chunk_rows``. Only one block is in memory at a time.

        """
        step = int(rows or self.chunk_rows)
        n = self._count
        coords = self.coords
        for start in range(0, n, step):
            stop = min(n, start + step)
            yield coords[start:stop], self.embeddings(slice(start, stop))

    def lookup(self, coords: np.ndarray) -> np.ndarray:
        """Row index of each (x, y), or -1 where the store has none.

        Returns:
            (M,) int64.

        """
        coords = as_coords(coords)
        keys, inside = pack_coords(coords)
        with self._lock:
            index = self._load_index()
            found = np.fromiter(
                (index.get(k, -1) for k in keys.tolist()), dtype=np.int64, count=len(keys)
            )
        found[~inside] = -1
        return found

    def missing(self, coords: np.ndarray) -> np.ndarray:
        """(M,) bool: True where the store has no embedding for that (x, y)."""
        return self.lookup(coords) < 0

    def get(self, coords: np.ndarray) -> np.ndarray:
        """(M, D) float32 embeddings of the given (x, y), in the given order.

        Raises:
            MissingEmbeddingsError: some coordinates are not in the store (a KeyError).

        """
        coords = as_coords(coords)
        rows = self.lookup(coords)
        absent = rows < 0
        if absent.any():
            missing = coords[absent]
            examples = ", ".join(f"({x}, {y})" for x, y in missing[:3].tolist())
            raise MissingEmbeddingsError(
                f"{int(absent.sum())} of {len(coords)} coordinates have no embedding in "
                f"{self.path} (e.g. {examples}); embed them first, or use missing() to select "
                "those to compute.",
                missing,
            )
        return self.embeddings(rows)

    def verify(self) -> None:
        """Read every committed row and check it: finite embeddings, unique coordinates.

        Raises:
            CorruptStoreError: on unreadable chunks, non-finite values or duplicate coords.

        """
        for _, block in self.iter_chunks():
            if not np.isfinite(block).all():
                raise CorruptStoreError(
                    f"Embedding store {self.path} holds non-finite embeddings; delete it and "
                    "embed again."
                )
        with self._lock:
            unique = len(self._load_index())
        if unique != self._count:
            raise CorruptStoreError(
                f"Embedding store {self.path} holds duplicate coordinates; delete it and embed "
                "again."
            )

    # ---- writing ------------------------------------------------------------------------

    def append(self, coords: np.ndarray, embeddings: np.ndarray) -> None:
        """Append rows whose coordinates are not in the store yet; commit them atomically.

        Coordinates already present (or repeated within the batch) are skipped: the first
        embedding written for an (x, y) is kept. The rows are written first and become visible
        only when the new count is committed, so an interrupted append leaves the store as it
        was before the call.

        Args:
            coords: (M, 2) integer level-0 (x, y).
            embeddings: (M, D) floating embeddings; stored as float32.

        Raises:
            StoreError: wrong shapes or dtypes, or NaN/inf embeddings (nothing is written).
            ReadOnlyStoreError: the store was opened with ``open``.

        """
        self._check_writable()
        coords = as_coords(coords)
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape != (len(coords), self.dim):
            raise StoreError(
                f"embeddings must have shape ({len(coords)}, {self.dim}) to match coords and "
                f"the store's dim; got {emb.shape}."
            )
        if not np.issubdtype(emb.dtype, np.floating):
            raise StoreError(f"embeddings must be floating point; got dtype {emb.dtype}.")
        emb = emb.astype(np.float32, copy=False)
        finite = np.isfinite(emb).all(axis=1)
        if not finite.all():
            raise StoreError(
                f"{int((~finite).sum())} of {len(emb)} embeddings contain NaN or inf (first at "
                f"coords {tuple(coords[~finite][0].tolist())}); nothing was written. Check the "
                "backbone's weights and input normalisation."
            )
        keys, inside = pack_coords(coords)
        if not inside.all():
            raise StoreError("coords must lie within the int32 range of level-0 pixels.")
        with self._lock:
            index = self._load_index()
            _, first = np.unique(keys, return_index=True)
            first.sort()
            new = np.fromiter((k not in index for k in keys[first].tolist()), bool, len(first))
            take = first[new]
            if take.size == 0:
                return
            start, stop = self._count, self._count + len(take)
            try:
                for arr, data in ((self._emb, emb[take]), (self._coords_arr, coords[take])):
                    if arr.shape[0] < stop:
                        rows = arr.chunks[0]
                        arr.resize((-(-stop // rows) * rows, arr.shape[1]))
                    arr[start:stop] = data
                write_commit(self.path, stop)
            except OSError as exc:
                raise StoreError(
                    f"Could not write to the embedding store {self.path}: {exc}. Rows committed "
                    "before are intact; fix the cause (disk space, permissions) and rerun."
                ) from exc
            if _CHECKED.get(str(self.path.resolve()), -1) == start:
                _CHECKED[str(self.path.resolve())] = stop  # written here: known good
            buf = self._load_coords(stop)  # grow the cache while it holds `start` rows
            buf[start:stop] = coords[take]
            self._count = stop
            index.update(zip(keys[take].tolist(), range(start, stop), strict=True))

    def set_attrs(self, **attrs: Any) -> None:
        """Merge JSON-serialisable user attributes into the store's metadata, atomically."""
        self._check_writable()
        new = normalise_json(attrs, "attrs")
        with self._lock:
            meta = read_json(self.path / META_FILE, "")
            meta["attrs"] = {**self._attrs, **new}
            meta["checksum"] = meta_checksum(meta)
            write_json(self.path / META_FILE, meta)
            self._attrs = meta["attrs"]

    # ---- internals ----------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(
                f"The embedding store {self.path} was opened read-only; use "
                "EmbeddingStore.create_or_open to append to it."
            )

    def _read(self, fn: Callable[[], Any]) -> np.ndarray:
        try:
            return np.asarray(fn(), dtype=np.float32)
        except Exception as exc:
            raise CorruptStoreError(
                f"Could not read embeddings from {self.path} ({type(exc).__name__}: {exc}). "
                f"Delete {self.path} and embed again."
            ) from exc

    def _load_coords(self, need: int = 0) -> np.ndarray:
        """Return the coords cache, loaded on first use, grown to hold ``need`` rows."""
        if self._coords_cache is None:
            try:
                loaded = np.asarray(self._coords_arr[: self._count], dtype=np.int64)
            except Exception as exc:
                raise CorruptStoreError(
                    f"Could not read coordinates from {self.path} ({exc}). Delete it and embed "
                    "again."
                ) from exc
            self._coords_cache = loaded
        if len(self._coords_cache) < need:
            grown = np.empty((max(need, 2 * len(self._coords_cache), 1024), 2), np.int64)
            grown[: self._count] = self._coords_cache[: self._count]
            self._coords_cache = grown
        return self._coords_cache

    def _load_index(self) -> dict[int, int]:
        if self._index is None:
            keys, _ = pack_coords(self._load_coords()[: self._count])
            self._index = dict(zip(keys.tolist(), range(self._count), strict=True))
        return self._index
