"""Where embedding stores live: one folder of stores, one deterministic name per store.

A store folder holds the stores of many slides and extractors side by side. A store's name
is ``<slide stem>-<content>__<backbone>__<hash>.dfl.zarr``: ``<content>`` is a short hash
of the slide's fingerprint (size, dimensions, µm/px, the bytes at both ends: not its name),
so two different slides that share a file name (``x.svs`` in two folders) get two stores,
and ``<hash>`` is that of the extractor (backbone identity and composition, not the slide).
Every consumer (the CLI, the panel, a dask worker, a slide model) that knows the slide and
the extractor finds the same store without an index. Stores named before the content key
(``<slide stem>__<backbone>__<hash>``) are still found and reused when they hold the same
slide. The default folder is the user cache
(:func:`napari_dfl.core.util.paths.default_store_dir`); the CLI's ``--stores`` and the
panel's store field choose another.

This module also finds stores by what they hold: the store a slide model needs for one
slide (:func:`find_store`), every store of a folder by slide name (:func:`index_stores`),
and the other slides embedded by the same extractor (:func:`sibling_stores`).
"""

from __future__ import annotations

import os
import re
import warnings
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from napari_dfl._version import __version__
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_format import StoreError, normalise_json
from napari_dfl.core.slides.fingerprint import slide_fingerprint
from napari_dfl.core.util.hashing import json_sha256

__all__ = ["STORE_SUFFIX", "MixedPrecisionWarning", "find_store", "index_stores",
           "legacy_store_path", "note_precision", "open_store_for",
           "sibling_stores", "slide_name", "store_extractor", "store_identity",
           "store_path_for"]

STORE_SUFFIX = ".dfl.zarr"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _content_key(identity: Any) -> str:
    """8 hex digits of the slide's fingerprint without its name ("" when there is none)."""
    slide = identity.get("slide") if isinstance(identity, dict) else None
    content = {k: v for k, v in slide.items() if k != "name"} if isinstance(slide, dict) else {}
    return json_sha256(content)[:8] if content else ""


def _name_parts(slide_path: str | os.PathLike[str], identity: dict[str, Any]) -> tuple[str, str]:
    """``(slide stem, "<backbone>__<extractor hash>")`` of a store name."""
    backbone = identity.get("backbone") if isinstance(identity, dict) else None
    if isinstance(backbone, dict):
        backbone = backbone.get("name") or backbone.get("id")
    name = _SAFE.sub("_", str(backbone)) if backbone else "unknown"
    digest = json_sha256({k: v for k, v in identity.items() if k != "slide"})[:12]
    stem = _SAFE.sub("_", Path(slide_path).stem) or "slide"
    return stem, f"{name}__{digest}"


def store_path_for(folder: str | os.PathLike[str], slide_path: str | os.PathLike[str],
                   identity: dict[str, Any]) -> Path:
    """Deterministic store folder for one slide and one extractor.

    The name is ``<slide stem>-<content>__<backbone name>__<hash>.dfl.zarr``: ``<content>``
    is 8 hex digits of the sha256 of ``identity["slide"]`` without its name (left out, with
    its dash, when the identity holds no slide content); the backbone name is
    ``identity["backbone"]["name"]`` (or ``identity["backbone"]`` when it is a string); the
    hash is the first 12 hex digits of the sha256 of the canonical JSON of ``identity``
    without its top-level ``"slide"`` key, so all slides embedded by the same extractor
    share it. Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``.
    """
    identity = normalise_json(identity, "identity")
    stem, extractor = _name_parts(slide_path, identity)
    content = _content_key(identity)
    stem = f"{stem}-{content}" if content else stem
    return Path(folder) / f"{stem}__{extractor}{STORE_SUFFIX}"


def legacy_store_path(folder: str | os.PathLike[str], slide_path: str | os.PathLike[str],
                      identity: dict[str, Any]) -> Path:
    """The name a store had before names held the slide's content key (read, never made)."""
    stem, extractor = _name_parts(slide_path, normalise_json(identity, "identity"))
    return Path(folder) / f"{stem}__{extractor}{STORE_SUFFIX}"


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

    A store written under the name used before content keys, holding this very slide and
    extractor, is reopened rather than computed again.

    Raises:
        StoreMismatchError: the store of that name holds something else (a damaged or
            hand-edited identity); the message says what to do.

    """
    extractor = Extractor.of(backbone, composition)
    identity = store_identity(slide, extractor)
    path = store_path_for(folder, slide.path, identity)
    if not path.exists():
        legacy = _open_or_none(legacy_store_path(folder, slide.path, identity))
        if legacy is not None and normalise_json(legacy.identity, "identity") == \
                normalise_json(identity, "identity"):
            return legacy
    store = EmbeddingStore.create_or_open(path, identity,
                                          dim=backbone.embed_dim * composition.n_parts)
    if not store.attrs:
        precision = getattr(backbone, "precision", None)
        store.set_attrs(
            slide_path=str(slide.path),
            mpp=slide.mpp,
            patch_size=composition.patch_size,
            patch_size_level0=composition.anchor_extent(slide.require_mpp()),
            parts=[f"{z:g}um/px {v}" for z, v in composition.parts()],
            package_version=__version__,
            **({"precisions": [precision]} if precision else {}),
        )
    return store


class MixedPrecisionWarning(UserWarning):
    """Rows of another precision are being added to a store (see :func:`note_precision`)."""


def note_precision(store: EmbeddingStore, precision: str | None) -> bool:
    """Record that rows computed in ``precision`` are about to be added to ``store``.

    Precision is not part of a store's identity (bf16 and fp32 vectors agree to a cosine of
    about 0.998), so a store can be filled in two; its ``precisions`` attribute says which
    wrote its rows. A store created before the attribute existed records none and is left
    alone (its history is unknown).

    Returns:
        True when ``precision`` is new to a store that records its precisions; a
        :class:`MixedPrecisionWarning` then says what to do.

    """
    known = store.attrs.get("precisions")
    if not precision or not isinstance(known, list) or precision in known:
        return False
    store.set_attrs(precisions=[*known, precision])
    warnings.warn(MixedPrecisionWarning(
        f"{store.path.name} holds embeddings computed in {', '.join(map(str, known))}; these "
        f"are computed in {precision}. The two agree closely, but a figure that mixes them "
        f"is the figure of neither: pass --precision {known[0]} to keep the store in one "
        "precision, or use another store folder."), stacklevel=2)
    return True


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
            (then the name decides; with several stores of that name, the most recently
            written).
        extractor: the extractor; a store of another one (weights, composition) counts as
            absent, as does an unreadable store.

    """
    path = getattr(slide, "path", slide)
    identity = extractor.to_dict()
    if hasattr(slide, "dimensions"):  # an open slide: the same content, not only the name
        identity = store_identity(slide, extractor)
        candidates = [store_path_for(folder, path, identity),
                      legacy_store_path(folder, path, identity)]
    else:
        stem, name = _name_parts(path, normalise_json(identity, "identity"))
        keyed = sorted(Path(folder).glob(f"{glob_escape(stem)}-*__{name}{STORE_SUFFIX}"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        candidates = [*keyed, legacy_store_path(folder, path, identity)]
    for candidate in candidates:
        store = _open_or_none(candidate)
        if store is None:
            continue
        try:
            found = store_extractor(store)
        except StoreError:
            continue
        if extractor.differences(found):
            continue
        if hasattr(slide, "dimensions"):
            recorded = normalise_json(store.identity.get("slide"), "slide")
            if recorded != normalise_json(identity["slide"], "slide"):
                continue
        return store
    return None


def index_stores(folder: str | os.PathLike) -> dict[str, Path]:
    """Every readable store of ``folder`` by slide name, slide stem and folder-name prefix."""
    index: dict[str, Path] = {}
    for path in sorted(Path(folder).glob(f"*{STORE_SUFFIX}")):
        index.setdefault(path.name.split("__")[0], path)
        prefix = path.name.split("__")[0]
        if re.fullmatch(r".+-[0-9a-f]{8}", prefix):  # <stem>-<content key>
            index.setdefault(prefix[:-9], path)
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
