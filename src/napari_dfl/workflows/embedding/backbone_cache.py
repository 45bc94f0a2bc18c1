"""The backbone of a process, loaded once and kept while the same one is asked for.

A dask worker embeds slide after slide, the extraction child job after job, a backbone
comparison backbone after backbone: each asks for the backbone its settings name and gets
the loaded one when it is the same, so weights are read once. One backbone is kept at a
time (they take hundreds of MB each).
"""

from __future__ import annotations

import threading

from napari_dfl.core.backbones.backbone import Backbone, load_backbone
from napari_dfl.core.features.settings import Settings

__all__ = ["cached_backbone", "clear_backbone_cache"]

_LOCK = threading.Lock()
_CACHE: dict[tuple, Backbone] = {}


def cached_backbone(settings: Settings) -> Backbone:
    """The backbone ``settings`` names, on their device and precision (loaded on first use)."""
    key = (settings.backbone, settings.weights, settings.device, settings.precision)
    with _LOCK:
        if key not in _CACHE:
            loaded = load_backbone(settings.backbone, weights=settings.weights,
                                   device=settings.device, precision=settings.precision)
            _CACHE.clear()
            _CACHE[key] = loaded
        return _CACHE[key]


def clear_backbone_cache() -> None:
    """Forget the kept backbone (frees its memory once nothing else holds it)."""
    with _LOCK:
        _CACHE.clear()
