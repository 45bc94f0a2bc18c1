"""Embedding a slide's samples behind one interface; the local embedder computes here.

Jobs (extract, train, predict, slide-level) only ask an :class:`Embedder` for the slide's
store and to embed what it lacks; they never care where the backbone runs:

* :class:`LocalEmbedder` (here) loads the backbone in this process: the CLI, scripts, dask
  workers, and the extraction child itself;
* :class:`~napari_dfl.workflows.embedding.child.ChildEmbedder` sends the work to the
  long-lived extraction child, which the napari panel needs (the GUI process must never
  import timm) and which keeps the backbone loaded between jobs.

Both embed into the store that :func:`napari_dfl.core.features.store_folder.open_store_for`
places in the settings' store folder, so a store made by one is found by the other.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Protocol

import numpy as np

from napari_dfl.core.features.engine import EmbedProgress, embed_coords
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import open_store_for
from napari_dfl.workflows.embedding.backbone_cache import cached_backbone

__all__ = ["CancelCheck", "Embedder", "LocalEmbedder", "ensure_embedded"]

CancelCheck = Callable[[], bool]


class Embedder(Protocol):
    """What a job needs from an embedder."""

    settings: Settings

    def known_store(self, slide) -> EmbeddingStore | None:
        """The slide's store for the settings' extractor, when it is known without work."""

    def embed(self, slide, coords: np.ndarray, cancel: CancelCheck | None = None,
              order: str = "spatial") -> Generator[EmbedProgress, None, EmbeddingStore]:
        """Embed what the store lacks of ``coords``; yield progress; return the store."""


class LocalEmbedder:
    """Embeds in this process with a backbone loaded once (per settings) and kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def backbone(self):
        """The loaded backbone (loaded on first use, then shared in this process)."""
        return cached_backbone(self.settings)

    def known_store(self, slide) -> EmbeddingStore:
        """The slide's store, created when absent (loading the backbone tells its path)."""
        return open_store_for(slide, self.backbone, self.settings.composition,
                              self.settings.stores)

    def embed(self, slide, coords: np.ndarray, cancel: CancelCheck | None = None,
              order: str = "spatial") -> Generator[EmbedProgress, None, EmbeddingStore]:
        """Embed the missing samples in this process (the engine's ``embed_coords``)."""
        store = self.known_store(slide)
        settings = self.settings
        return (yield from embed_coords(slide, coords, self.backbone, settings.composition,
                                        store, batch_size=settings.batch_size,
                                        readers=settings.readers, cancel=cancel, order=order))


def ensure_embedded(embedder: Embedder, slide, coords: np.ndarray,
                    cancel: CancelCheck | None = None, order: str = "spatial",
                    ) -> Generator[EmbedProgress, None, EmbeddingStore]:
    """The slide's store holding every sample of ``coords``: embed only what it lacks."""
    store = embedder.known_store(slide)
    if store is not None and not store.missing(np.asarray(coords).reshape(-1, 2)).any():
        return store
    return (yield from embedder.embed(slide, coords, cancel, order))
