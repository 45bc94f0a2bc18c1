"""Exchange embeddings with TRIDENT and CLAM through their h5 feature files.

Their layout: a dataset ``features`` of shape (N, D) (some CLAM versions write (1, N, D)) and
a dataset ``coords`` of shape (N, 2) holding the level-0 (x, y) top-left corner of each patch,
with patch geometry as attributes of ``coords`` (``patch_size``, ``patch_size_level0``,
``level0_magnification``, ``target_magnification``, ``name``). napari-dfl stores use the same
coordinate convention, so rows map one to one.

``h5py`` is an optional dependency: ``pip install napari-dfl[h5]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.util.hashing import file_sha256

__all__ = ["H5FormatError", "MissingDependencyError", "export_h5", "import_h5"]

IDENTITY_ATTR = "napari_dfl_identity"
ATTRS_ATTR = "napari_dfl_attrs"
_BLOCK_ROWS = 16384
# h5 ``coords`` attribute <- store attrs keys to take it from, in order of preference.
_COORD_ATTRS = {
    "patch_size_level0": ("patch_size_level0", "tile_size_level0"),
    "patch_size": ("patch_size",),
    "level0_magnification": ("level0_magnification", "objective_power"),
    "target_magnification": ("target_magnification",),
    "name": ("name", "slide_name"),
}


class MissingDependencyError(DFLError, ImportError):
    """An optional dependency needed for this operation is not installed."""


class H5FormatError(DFLError):
    """An h5 file is not HDF5, or lacks or garbles the TRIDENT/CLAM datasets."""


def _h5py() -> ModuleType:
    try:
        import h5py
    except ImportError as exc:
        raise MissingDependencyError(
            "Reading or writing TRIDENT/CLAM .h5 feature files needs h5py: "
            "pip install napari-dfl[h5]"
        ) from exc
    return h5py


def _plain(value: Any) -> Any:
    """Turn an h5 attribute value into plain JSON, or None when it has no JSON form."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


def export_h5(
    store: EmbeddingStore,
    path: str | os.PathLike[str],
    *,
    patch_size_level0: int | None = None,
) -> Path:
    """Write a store as a TRIDENT/CLAM feature file, atomically.

    Datasets ``features`` (N, D) float32 and ``coords`` (N, 2) int64; on ``coords`` the
    attributes ``patch_size_level0``, ``patch_size``, ``level0_magnification``,
    ``target_magnification`` and ``name`` when known (from the argument or ``store.attrs``);
    on the file, ``napari_dfl_identity`` and ``napari_dfl_attrs`` as JSON strings.

    Args:
        store: the embedding store.
        path: the ``.h5`` file to write (replaced if it exists).
        patch_size_level0: patch side in level-0 pixels; overrides ``store.attrs``. TRIDENT's
            slide encoders need it.

    Returns:
        The path written.

    """
    h5py = _h5py()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = store.attrs
    coord_attrs: dict[str, Any] = {}
    for h5_key, store_keys in _COORD_ATTRS.items():
        for key in store_keys:
            if attrs.get(key) is not None:
                coord_attrs[h5_key] = attrs[key]
                break
    if patch_size_level0 is not None:
        coord_attrs["patch_size_level0"] = patch_size_level0
    for key in ("patch_size_level0", "patch_size"):  # readers index with these: whole ints
        value = coord_attrs.get(key)
        if isinstance(value, float) and value.is_integer():
            coord_attrs[key] = int(value)
    n = len(store)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            features = f.create_dataset("features", shape=(n, store.dim), dtype="float32")
            coords = f.create_dataset("coords", data=np.asarray(store.coords, dtype=np.int64))
            start = 0
            for _, block in store.iter_chunks(max(store.chunk_rows, _BLOCK_ROWS)):
                features[start : start + len(block)] = block
                start += len(block)
            for key, value in coord_attrs.items():
                coords.attrs[key] = value
            f.attrs[IDENTITY_ATTR] = json.dumps(store.identity, sort_keys=True)
            f.attrs[ATTRS_ATTR] = json.dumps(attrs, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _dataset(f: Any, name: str, path: Path) -> tuple[Any, bool]:
    """Return the dataset ``name`` and whether it has a leading singleton axis to drop."""
    h5py = _h5py()
    present = sorted(k for k in f if isinstance(f[k], h5py.Dataset))
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise H5FormatError(
            f"{path} has no {name!r} dataset at its root (datasets found: "
            f"{', '.join(present) or 'none'}); a TRIDENT/CLAM feature file needs 'features' "
            "(N, D) and 'coords' (N, 2)."
        )
    ds = f[name]
    want = 2
    squeeze = ds.ndim == want + 1 and ds.shape[0] == 1
    if ds.ndim != want and not squeeze:
        raise H5FormatError(f"{path}: {name!r} has shape {ds.shape}; expected 2-D.")
    return ds, squeeze


def _rows(ds: Any, squeeze: bool, start: int, stop: int) -> np.ndarray:
    return np.asarray(ds[0, start:stop] if squeeze else ds[start:stop])


def _coords_block(block: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(block.dtype, np.integer):
        return block.astype(np.int64)
    floating = np.issubdtype(block.dtype, np.floating)
    if floating and np.all(np.isfinite(block)) and np.all(block == np.round(block)):
        return block.astype(np.int64)
    raise H5FormatError(f"{path}: 'coords' must hold integer pixel positions; got {block.dtype}.")


def _features_block(block: np.ndarray, path: Path, start: int) -> np.ndarray:
    if not np.issubdtype(block.dtype, np.floating):
        raise H5FormatError(f"{path}: 'features' must be floating point; got {block.dtype}.")
    block = block.astype(np.float32)
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        raise H5FormatError(
            f"{path}: {int(bad.sum())} feature rows contain NaN or inf (first at row "
            f"{start + int(np.flatnonzero(bad)[0])}); nothing was imported."
        )
    return block


def import_h5(
    path: str | os.PathLike[str],
    store_path: str | os.PathLike[str],
    identity: dict[str, Any] | None = None,
) -> EmbeddingStore:
    """Import a TRIDENT/CLAM feature file into an embedding store.

    The file is validated entirely (shapes, dtypes, finite values) before anything is written.
    Importing the same file into the same store again is a no-op; duplicate coordinates in
    the file keep their first row (with a warning).

    Args:
        path: the ``.h5`` file with ``features`` (N, D) or (1, N, D) and ``coords`` (N, 2).
        store_path: the store directory to create (or resume).
        identity: the store identity; default ``{"imported_from": <file name>, "sha256": <file
            hash>}`` plus ``"napari_dfl_identity"`` when the file carries one.

    Returns:
        The store, open for appending.

    Raises:
        H5FormatError: not an HDF5 file, or missing/malformed datasets (named in the message).
        MissingDependencyError: h5py is not installed.

    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise H5FormatError(f"No h5 file at {path}; check the path.")
    if not h5py.is_hdf5(path):
        raise H5FormatError(
            f"{path} is not an HDF5 file; expected a TRIDENT/CLAM .h5 feature file."
        )
    with h5py.File(path, "r") as f:
        features, f_squeeze = _dataset(f, "features", path)
        coords, c_squeeze = _dataset(f, "coords", path)
        n, dim = features.shape[-2:]
        if coords.shape[-2:] != (n, 2):
            raise H5FormatError(
                f"{path}: 'coords' has shape {coords.shape}; expected ({n}, 2) to match "
                f"'features' {features.shape}."
            )
        if dim == 0:
            raise H5FormatError(f"{path}: 'features' has zero columns.")
        for start in range(0, n, _BLOCK_ROWS):  # validate everything before writing
            stop = min(n, start + _BLOCK_ROWS)
            _features_block(_rows(features, f_squeeze, start, stop), path, start)
            _coords_block(_rows(coords, c_squeeze, start, stop), path)
        carried = _plain(f.attrs.get(IDENTITY_ATTR))
        extra = _plain(f.attrs.get(ATTRS_ATTR))
        attrs: dict[str, Any] = {}
        with contextlib.suppress(TypeError, ValueError):
            parsed = json.loads(extra) if isinstance(extra, str) else None
            attrs.update(parsed if isinstance(parsed, dict) else {})
        for key, value in coords.attrs.items():
            plain = _plain(value)
            if plain is not None:
                attrs[key] = plain
        if "patch_size_level0" not in attrs and "patch_size" in attrs and "downsample" in attrs:
            with contextlib.suppress(TypeError, ValueError, IndexError):  # CLAM patch files
                down = attrs["downsample"]
                factor = float(down[0] if isinstance(down, list) else down)
                attrs["patch_size_level0"] = round(float(attrs["patch_size"]) * factor)
        if identity is None:
            identity = {"imported_from": path.name, "sha256": file_sha256(path)}
            if carried is not None:
                with contextlib.suppress(TypeError, ValueError):
                    carried = json.loads(carried)
                identity[IDENTITY_ATTR] = carried
        store = EmbeddingStore.create_or_open(store_path, identity, int(dim))
        before = len(store)
        for start in range(0, n, _BLOCK_ROWS):
            stop = min(n, start + _BLOCK_ROWS)
            store.append(
                _coords_block(_rows(coords, c_squeeze, start, stop), path),
                _features_block(_rows(features, f_squeeze, start, stop), path, start),
            )
    store.set_attrs(**{**attrs, "imported_from": path.name})
    skipped = n - (len(store) - before)
    if before == 0 and skipped:
        warnings.warn(
            f"{path} holds {skipped} rows with repeated coordinates; kept the first of each.",
            UserWarning,
            stacklevel=2,
        )
    return store
