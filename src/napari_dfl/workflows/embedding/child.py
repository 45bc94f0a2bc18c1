"""Embedding in the extraction child: the panel's embedder (see :mod:`.local` for the API)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import ClassVar

import numpy as np

from napari_dfl.core.errors import Cancelled, DFLError
from napari_dfl.core.features.engine import EmbedProgress
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import find_store
from napari_dfl.workflows.embedding.local import CancelCheck
from napari_dfl.workflows.embedding.service import (
    ExtractionRequest,
    ExtractionService,
    shared_service,
)

__all__ = ["ChildEmbedder"]


def _never() -> bool:
    return False


class ChildEmbedder:
    """Embeds in the extraction child; remembers each slide's store path once reported.

    The store's path depends on the backbone's weights hash, which only the child (that
    loads the backbone) knows; after the first job on a slide the path is remembered and
    :meth:`known_store` answers without the child.
    """

    #: Store path per slide and store key, shared by every panel of the process.
    _paths: ClassVar[dict[tuple, str]] = {}

    def __init__(self, settings: Settings, service: ExtractionService | None = None) -> None:
        self.settings = settings
        self._service = service

    @property
    def service(self) -> ExtractionService:
        """The extraction child's service (the process's shared one by default)."""
        return self._service if self._service is not None else shared_service()

    def _key(self, slide) -> tuple:
        return (str(Path(slide.path).resolve()), slide.mpp, self.settings.store_key())

    def known_store(self, slide) -> EmbeddingStore | None:
        """The slide's store, when it is known without waiting, else None.

        Known when a job already reported it, or when the child reported the backbone's
        identity (the panel preloads it when a slide is picked): then the store the CLI, a
        dask worker or an earlier session wrote is found in the store folder.
        """
        key = self._key(slide)
        path = self._paths.get(key)
        if path is not None and Path(path).exists():
            return EmbeddingStore.open(path)
        identity = self.service.backbone_identity(self.settings)
        if identity is None:
            return None
        store = find_store(self.settings.stores, slide,
                           Extractor(identity, self.settings.composition))
        if store is not None:
            self._paths[key] = str(store.path)
        return store

    def embed(self, slide, coords: np.ndarray, cancel: CancelCheck | None = None,
              order: str = "spatial") -> Generator[EmbedProgress, None, EmbeddingStore]:
        """Embed in the child; forward a cancel to it; return the store read-only.

        Raises:
            Cancelled: the cancel check became true (committed batches stay in the store).
            DFLError: the child failed, with its one-line message.

        """
        cancel = cancel or _never
        # the store folder is resolved here: the child's environment dates from its start
        settings = self.settings.with_(store_dir=str(self.settings.stores))
        request = ExtractionRequest(slide_path=str(slide.path), mpp=slide.mpp,
                                    coords=np.asarray(coords, np.int64).reshape(-1, 2),
                                    settings=settings, order=order)
        if cancel():
            raise Cancelled("cancelled before extraction started.")
        job = self.service.job(request).start()
        name = Path(slide.path).name
        try:
            while not job.finished:
                if cancel() and not job.cancelled:
                    job.cancel()
                for kind, payload in job.poll(0.1):
                    if kind == "started":
                        self._paths[self._key(slide)] = payload["store"]
                        yield EmbedProgress(payload["done"], payload["total"], 0, 0.0, name)
                    elif kind == "progress":
                        yield EmbedProgress(payload["done"], payload["total"],
                                            payload["computed"], payload["rate"], name,
                                            np.asarray(payload["committed"], np.int64))
                    elif kind == "cancelled":
                        raise Cancelled(payload["message"])
                    elif kind == "failed":
                        raise DFLError(payload["message"])
        finally:
            job.shutdown()
        return EmbeddingStore.open(self._paths[self._key(slide)])
