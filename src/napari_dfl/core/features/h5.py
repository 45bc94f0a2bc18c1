"""Exchange embeddings with TRIDENT and CLAM through their h5 feature files.

Their layout: a dataset ``features`` of shape (N, D) (some CLAM versions write (1, N, D)) and
a dataset ``coords`` of shape (N, 2) holding the level-0 (x, y) top-left corner of each patch,
with patch geometry as attributes of ``coords`` (``patch_size``, ``patch_size_level0``,
``level0_magnification``, ``target_magnification``, ``name``). napari-dfl stores use the same
coordinate convention, so rows map one to one.

TRIDENT's readers need ``patch_size``, ``level0_magnification`` and ``target_magnification``
on ``coords`` (without them they fall back to the CLAM/Fishing-Rod legacy reader, which wants
a ``patch_level``) and its slide encoders ``patch_size_level0``. TRIDENT's magnification is
``10 / (µm per pixel)``, so these follow from what every store records: the slide's µm/px and
the composition's working zoom (:func:`trident_attributes`). A store's embedding is the
concatenation of its composition's parts; ``part=`` exports one of them (the vector a patch
encoder computes), and :func:`export_clam` writes CLAM's ``h5_files/`` and ``pt_files/``
(a ``torch.save`` of the bare feature tensor).

``h5py`` is an optional dependency: ``pip install napari-dfl[h5]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from napari_dfl.core.errors import DFLError, MissingDependencyError, require_module
from napari_dfl.core.features.parts import part_columns
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slides.sampling import Composition, CompositionError
from napari_dfl.core.util.hashing import file_sha256

__all__ = ["H5FormatError", "MissingDependencyError", "export_clam", "export_h5", "import_h5",
           "missing_trident_attributes", "part_columns_of", "part_names",
           "trident_attributes"]

IDENTITY_ATTR = "napari_dfl_identity"
ATTRS_ATTR = "napari_dfl_attrs"
PART_ATTR = "napari_dfl_part"
_BLOCK_ROWS = 16384
#: ``coords`` attributes TRIDENT's readers need (else they fall back to the legacy reader).
TRIDENT_REQUIRED = ("patch_size", "level0_magnification", "target_magnification")
#: ``coords`` attributes written when known, in this order.
TRIDENT_ATTRS = (*TRIDENT_REQUIRED, "patch_size_level0", "name", "savetodir", "level0_width",
                 "level0_height")
# h5 ``coords`` attribute <- store attrs keys to take it from, in order of preference.
_COORD_ATTRS = {
    "patch_size_level0": ("patch_size_level0", "tile_size_level0"),
    "patch_size": ("patch_size",),
    "level0_magnification": ("level0_magnification",),
    "target_magnification": ("target_magnification",),
    "name": ("name", "slide_name"),
    "level0_width": ("level0_width",),
    "level0_height": ("level0_height",),
}


class H5FormatError(DFLError):
    """An h5 file is not HDF5, or lacks or garbles the TRIDENT/CLAM datasets."""


def _h5py() -> ModuleType:
    return require_module("h5py", "Reading or writing TRIDENT/CLAM .h5 feature files", "h5")


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


def _magnification(mpp: Any) -> float | None:
    """TRIDENT's magnification of a pixel size (``10 / µm per px``), or None."""
    if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not mpp > 0:
        return None
    return round(10.0 / float(mpp), 6)


def _whole(value: Any) -> Any:
    """Pixel sizes as ints (TRIDENT indexes with them); others unchanged."""
    if isinstance(value, float) and np.isfinite(value):
        return round(value)
    return value


def trident_attributes(store: EmbeddingStore) -> dict[str, Any]:
    """The TRIDENT ``coords`` attributes a store can give, from its attrs and identity.

    ``patch_size`` is the working patch side in pixels at ``target_magnification`` (the
    composition's first zoom), ``patch_size_level0`` that side in level-0 pixels,
    ``level0_magnification`` and ``target_magnification`` TRIDENT's ``10 / µm per px`` of the
    slide and of the working zoom, ``name`` the slide's file name without its extension,
    ``level0_width``/``level0_height`` the slide's dimensions. Values the store records in its
    attrs win; the rest are derived from the identity (slide fingerprint and composition).
    Keys that cannot be known are left out (see :func:`missing_trident_attributes`).
    """
    attrs, identity = store.attrs, store.identity
    out: dict[str, Any] = {}
    for h5_key, store_keys in _COORD_ATTRS.items():
        for key in store_keys:
            if attrs.get(key) is not None:
                out[h5_key] = attrs[key]
                break
    slide = identity.get("slide") if isinstance(identity.get("slide"), dict) else {}
    composition = identity.get("composition")
    composition = composition if isinstance(composition, dict) else {}
    zooms = composition.get("zooms")
    working = zooms[0] if isinstance(zooms, list) and zooms else None
    slide_mpp = attrs["mpp"] if attrs.get("mpp") is not None else slide.get("mpp")
    derived: dict[str, Any] = {
        "patch_size": composition.get("patch_size"),
        "level0_magnification": _magnification(slide_mpp),
        "target_magnification": _magnification(working),
    }
    if "patch_size_level0" not in out and isinstance(composition.get("patch_size"), int) \
            and _magnification(working) and _magnification(slide_mpp):
        derived["patch_size_level0"] = composition["patch_size"] * working / slide_mpp
    if isinstance(slide.get("name"), str) and slide["name"]:
        derived["name"] = Path(slide["name"]).stem
    dims = slide.get("dimensions")
    if isinstance(dims, list) and len(dims) == 2:
        derived["level0_width"], derived["level0_height"] = dims
    for key, value in derived.items():
        if out.get(key) is None and value is not None:
            out[key] = value
    for key in ("patch_size_level0", "patch_size", "level0_width", "level0_height"):
        out[key] = _whole(out.get(key))
    return {k: out[k] for k in TRIDENT_ATTRS if out.get(k) is not None}


def missing_trident_attributes(attributes: dict[str, Any]) -> list[str]:
    """TRIDENT ``coords`` attributes (required ones and ``patch_size_level0``) not given."""
    return [k for k in (*TRIDENT_REQUIRED, "patch_size_level0", "name") if k not in attributes]


def part_names(store: EmbeddingStore) -> list[str]:
    """The names of a store's composition parts, in embedding order (``"0.5um/px rgb"``)."""
    composition = _composition(store)
    return [f"{zoom:g}um/px {variant}" for zoom, variant in composition.parts()]


def _composition(store: EmbeddingStore) -> Composition:
    data = store.identity.get("composition")
    if not isinstance(data, dict):
        raise H5FormatError(f"The store {store.path} records no composition, so its parts "
                            "are unknown; export it whole (without --part).")
    try:
        return Composition.from_dict(data)
    except (CompositionError, KeyError, TypeError, ValueError) as exc:
        raise H5FormatError(f"The store {store.path} records an unreadable composition "
                            f"({exc}); export it whole (without --part).") from None


def _part_key(text: str) -> str:
    return " ".join(str(text).lower().replace("_", " ").replace("-", " ").split())


def part_columns_of(store: EmbeddingStore, part: str) -> np.ndarray:
    """Column indices of one composition part of a store's embeddings.

    ``part`` is named ``"<µm/px>um/px <variant>"`` (``"0.5um/px rgb"``), by TRIDENT-style
    magnification (``"x20 rgb"``) or by its 0-based position (``"0"``); case, ``-`` and
    ``_`` do not matter.

    Raises:
        H5FormatError: no such part (the message lists the store's parts).

    """
    composition = _composition(store)
    parts = composition.parts()
    if store.dim % len(parts):
        raise H5FormatError(f"The store {store.path} has {store.dim} columns, not a multiple of "
                            f"its {len(parts)} parts; export it whole (without --part).")
    names = part_names(store)
    wanted = _part_key(part)
    index = None
    for i, (zoom, variant) in enumerate(parts):
        aliases = {_part_key(names[i]), _part_key(f"x{10 / zoom:g} {variant}"), str(i)}
        if wanted in aliases:
            index = i
            break
    if index is None:
        raise H5FormatError(f"The store {store.path} has no part {part!r}; its parts are: "
                            f"{', '.join(repr(n) for n in names)} (or their positions "
                            f"0-{len(names) - 1}).")
    zoom, variant = parts[index]
    sub = replace(composition, zooms=(zoom,), variants=(variant,))
    return part_columns(composition, sub, store.dim // len(parts))


def _feature_blocks(store: EmbeddingStore, columns: np.ndarray | None) -> Iterator[np.ndarray]:
    for _, block in store.iter_chunks(max(store.chunk_rows, _BLOCK_ROWS)):
        yield block if columns is None else np.ascontiguousarray(block[:, columns])


def _feature_attrs(store: EmbeddingStore, coord_attrs: dict[str, Any]) -> dict[str, Any]:
    """What TRIDENT puts on its ``features`` dataset: ``name``, ``savetodir``, ``encoder``."""
    out = {k: coord_attrs[k] for k in ("name", "savetodir") if k in coord_attrs}
    backbone = store.identity.get("backbone")
    encoder = backbone.get("name") if isinstance(backbone, dict) else backbone
    if isinstance(encoder, str) and encoder:
        out["encoder"] = encoder
    return out


def export_h5(
    store: EmbeddingStore,
    path: str | os.PathLike[str],
    *,
    patch_size_level0: int | None = None,
    part: str | None = None,
) -> Path:
    """Write a store as a TRIDENT/CLAM feature file, atomically.

    Datasets ``features`` (N, D) float32 and ``coords`` (N, 2) int64; on ``coords`` the
    TRIDENT attributes the store can give (:func:`trident_attributes`: ``patch_size``,
    ``level0_magnification``, ``target_magnification``, ``patch_size_level0``, ``name``,
    ``level0_width``, ``level0_height``) and ``savetodir`` (the folder written to); on the
    ``features`` dataset, TRIDENT's ``name``, ``savetodir`` and ``encoder`` (the backbone's
    name); on the file, ``napari_dfl_identity`` and ``napari_dfl_attrs`` as JSON strings (and
    ``napari_dfl_part`` when one part is exported). A store that cannot give TRIDENT's
    required attributes (an old import) is written with what it has, with a warning naming
    what is missing.

    Args:
        store: the embedding store.
        path: the ``.h5`` file to write (replaced if it exists).
        patch_size_level0: patch side in level-0 pixels; overrides the store's. TRIDENT's
            slide encoders need it.
        part: export only this composition part (see :func:`part_columns_of`): the vector
            one patch encoder computes, what a slide encoder expects.

    Returns:
        The path written.

    Raises:
        H5FormatError: ``part`` names no part of the store.
        MissingDependencyError: h5py is not installed.

    """
    h5py = _h5py()
    path = Path(path)
    columns = None if part is None else part_columns_of(store, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    coord_attrs = trident_attributes(store)
    if patch_size_level0 is not None:
        coord_attrs["patch_size_level0"] = _whole(patch_size_level0)
    coord_attrs["savetodir"] = str(path.parent.resolve())
    missing = missing_trident_attributes(coord_attrs)
    if missing:
        warnings.warn(f"{path.name}: the store {Path(store.path).name} records neither "
                      f"{', '.join(missing)} nor what they follow from (the slide's µm/px and "
                      "the composition: an imported file without them), so the h5 lacks "
                      "them and TRIDENT falls back to its legacy reader; embed the slide "
                      "with napari-dfl, or give patch_size_level0.", UserWarning, stacklevel=2)
    n = len(store)
    dim = store.dim if columns is None else len(columns)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            features = f.create_dataset("features", shape=(n, dim), dtype="float32")
            coords = f.create_dataset("coords", data=np.asarray(store.coords, dtype=np.int64))
            start = 0
            for block in _feature_blocks(store, columns):
                features[start : start + len(block)] = block
                start += len(block)
            for key, value in coord_attrs.items():
                coords.attrs[key] = value
            for key, value in _feature_attrs(store, coord_attrs).items():
                features.attrs[key] = value
            f.attrs[IDENTITY_ATTR] = json.dumps(store.identity, sort_keys=True)
            f.attrs[ATTRS_ATTR] = json.dumps(store.attrs, sort_keys=True)
            if part is not None:
                f.attrs[PART_ATTR] = part_names(store)[_part_index(store, columns)]
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _part_index(store: EmbeddingStore, columns: np.ndarray) -> int:
    return int(columns[0]) // len(columns)


def export_clam(
    store: EmbeddingStore,
    folder: str | os.PathLike[str],
    *,
    name: str | None = None,
    patch_size_level0: int | None = None,
    part: str | None = None,
) -> dict[str, Path]:
    """Write CLAM's feature layout: ``h5_files/<name>.h5`` and ``pt_files/<name>.pt``.

    The ``.pt`` file is ``torch.save`` of the bare ``(N, D)`` float32 feature tensor (what
    CLAM's ``Generic_MIL_Dataset`` loads with ``torch.load``), rows in the h5's order.

    Args:
        store: the embedding store.
        folder: CLAM's features folder (created).
        name: the slide id (default: the slide's file name without extension).
        patch_size_level0: as in :func:`export_h5`.
        part: as in :func:`export_h5`.

    Returns:
        ``{"h5": path, "pt": path}``.

    """
    import torch  # a core dependency, but heavy: only when CLAM files are asked for

    folder = Path(folder)
    name = name or trident_attributes(store).get("name") or Path(store.path).name.split("__")[0]
    h5_path = export_h5(store, folder / "h5_files" / f"{name}.h5",
                        patch_size_level0=patch_size_level0, part=part)
    columns = None if part is None else part_columns_of(store, part)
    blocks = list(_feature_blocks(store, columns))
    dim = store.dim if columns is None else len(columns)
    features = np.concatenate(blocks) if blocks else np.empty((0, dim), np.float32)
    pt_path = folder / "pt_files" / f"{name}.pt"
    pt_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pt_path.with_name(f".{pt_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), tmp)
        os.replace(tmp, pt_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return {"h5": h5_path, "pt": pt_path}


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
