"""Where embedding stores live: one folder of stores, one deterministic name per store.

A store folder holds the stores of many slides and extractors side by side. A store's name
is ``<slide stem>__<backbone>__<hash>.dfl.zarr``, where the hash is that of the extractor
(backbone identity and composition, not the slide), so every consumer (the CLI, the panel,
a dask worker, a slide model) that knows the slide and the extractor finds the same store
without an index. The default folder is the user cache
(:func:`napari_dfl.core.util.paths.default_store_dir`); the CLI's ``--stores`` and the
panel's store field choose another.

This module also finds stores by what they hold: the store a slide model needs for one
slide (:func:`find_store`), every store of a folder by slide name (:func:`index_stores`),
and the other slides embedded by the same extractor (:func:`sibling_stores`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from napari_dfl._version import __version__
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_format import StoreError, normalise_json
from napari_dfl.core.slides.fingerprint import slide_fingerprint
from napari_dfl.core.util.hashing import json_sha256

__all__ = ["STORE_SUFFIX", "find_store", "index_stores", "open_store_for", "sibling_stores",
           "slide_name", "store_extractor", "store_identity", "store_path_for"]

STORE_SUFFIX = ".dfl.zarr"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def store_path_for(folder: str | os.PathLike[str], slide_path: str | os.PathLike[str],
                   identity: dict[str, Any]) -> Path:
    """Deterministic store folder for one slide and one extractor.

    The name is ``<slide stem>__<backbone name>__<hash>.dfl.zarr``: the backbone name is
    ``identity["backbone"]["name"]`` (or ``identity["backbone"]`` when it is a string), and the
    hash is the first 12 hex digits of the sha256 of the canonical JSON of ``identity`` without
    its top-level ``"slide"`` key, so all slides embedded by the same extractor share it.
    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``.
    """
    identity = normalise_json(identity, "identity")
    backbone = identity.get("backbone") if isinstance(identity, dict) else None
    if isinstance(backbone, dict):
        backbone = backbone.get("name") or backbone.get("id")
    name = _SAFE.sub("_", str(backbone)) if backbone else "unknown"
    digest = json_sha256({k: v for k, v in identity.items() if k != "slide"})[:12]
    stem = _SAFE.sub("_", Path(slide_path).stem) or "slide"
    return Path(folder) / f"{stem}__{name}__{digest}{STORE_SUFFIX}"


def store_identity(slide: Any, extractor: Extractor) -> dict[str, Any]:
    """What a store is keyed on: the extractor and the slide's fingerprint."""
    return {**extractor.to_dict(), "slide": slide_fingerprint(slide)}


def open_store_for(slide: Any, backbone: Any, composition: Any,
                   folder: str | os.PathLike) -> EmbeddingStore:
    """Create or reopen the store of this slide and extractor in ``folder``.

    Args:
        slide: the open slide (with its mpp).
        backbone: the loaded backbone.
        composition: the sample composition.
        folder: the store folder.

    Raises:
        StoreMismatchError: a store of that name holds another slide's embeddings (two
            slides with one name); the message says what to do.

    """
    extractor = Extractor.of(backbone, composition)
    identity = store_identity(slide, extractor)
    path = store_path_for(folder, slide.path, identity)
    store = EmbeddingStore.create_or_open(path, identity,
                                          dim=backbone.embed_dim * composition.n_parts)
    if not store.attrs:
        store.set_attrs(
            slide_path=str(slide.path),
            mpp=slide.mpp,
            patch_size=composition.patch_size,
            patch_size_level0=composition.anchor_extent(slide.require_mpp()),
            parts=[f"{z:g}um/px {v}" for z, v in composition.parts()],
            package_version=__version__,
        )
    return store


def store_extractor(store: EmbeddingStore) -> Extractor:
    """The extractor that wrote a store.

    Raises:
        StoreError: the store's identity names no valid extractor.

    """
    try:
        return Extractor.from_dict(store.identity, f"the store {store.path}")
    except DFLError as exc:
        raise StoreError(str(exc)) from None


def slide_name(store: EmbeddingStore) -> str:
    """The slide's file name recorded in a store identity, else the store folder prefix."""
    slide = store.identity.get("slide")
    if isinstance(slide, dict) and isinstance(slide.get("name"), str) and slide["name"]:
        return slide["name"]
    return Path(store.path).name.split("__")[0]


def _open_or_none(path: Path) -> EmbeddingStore | None:
    try:
        return EmbeddingStore.open(path)
    except DFLError:
        return None


def find_store(folder: str | os.PathLike, slide: Any,
               extractor: Extractor) -> EmbeddingStore | None:
    """The slide's store written by ``extractor`` in ``folder`` (read-only), or None.

    Args:
        folder: the store folder.
        slide: an open slide (its content fingerprint must match the store's) or a path
            (then the name decides).
        extractor: the extractor; a store of another one (weights, composition) counts as
            absent, as does an unreadable store.

    """
    path = getattr(slide, "path", slide)
    store = _open_or_none(store_path_for(folder, path, extractor.to_dict()))
    if store is None:
        return None
    try:
        found = store_extractor(store)
    except StoreError:
        return None
    if extractor.differences(found):
        return None
    if hasattr(slide, "dimensions"):  # an open slide: the same content, not only the name
        recorded = normalise_json(store.identity.get("slide"), "slide")
        if recorded != normalise_json(slide_fingerprint(slide), "slide"):
            return None
    return store


def index_stores(folder: str | os.PathLike) -> dict[str, Path]:
    """Every readable store of ``folder`` by slide name, slide stem and folder-name prefix."""
    index: dict[str, Path] = {}
    for path in sorted(Path(folder).glob(f"*{STORE_SUFFIX}")):
        index.setdefault(path.name.split("__")[0], path)
        store = _open_or_none(path)
        if store is None:
            continue
        name = slide_name(store)
        index.setdefault(name, path)
        index.setdefault(Path(name).stem, path)
    return index


def sibling_stores(store: EmbeddingStore) -> list[EmbeddingStore]:
    """``store`` first, then the other non-empty stores of its folder of the same extractor.

    Their embeddings share one space (same backbone, weights and composition), so they can
    be projected or compared together. Unreadable stores are skipped.
    """
    wanted, here = store_extractor(store), Path(store.path).resolve()
    found = [store]
    for path in sorted(here.parent.glob(f"*{STORE_SUFFIX}")):
        if path.resolve() == here:
            continue
        other = _open_or_none(path)
        if other is None or not len(other) or other.dim != store.dim:
            continue
        try:
            same = not wanted.differences(store_extractor(other))
        except StoreError:
            continue
        if same:
            found.append(other)
    return found
