"""Embedding extraction in a separate process, for the GUI.

Why a process: with Mesa's software OpenGL (llvmpipe), importing ``torchvision.ops`` or
``triton`` after a napari viewer has rendered segfaults the process, and ``import timm``
imports both. The backbone therefore never lives in the GUI process: a child started with
the ``spawn`` method (a fresh interpreter, no OpenGL context, no inherited Qt state) loads
it, runs :func:`napari_dfl.core.embed.embed_coords` into the embedding store and reports
over a queue. The GUI reads embeddings back from the store (``import torch`` alone is safe
there). A crash of the child cannot take the viewer down, and cancelling is an event
checked between batches: every committed batch stays in the store.

Messages are ``(kind, payload)`` tuples of plain Python/numpy values:

* ``("started", {"store": str, "total": int, "backbone": dict, "dim": int})``
* ``("progress", {"done": int, "total": int, "committed": (M, 2) int64})``
* ``("finished", {"store": str, "done": int, "total": int})``
* ``("cancelled", {"store": str | None, "message": str})``
* ``("failed", {"message": str})``: one line, the core's ``DFLError`` text where there is one.

This module imports neither Qt nor napari, nor (in the parent) torch or timm.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queue_module
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "TERMINAL",
    "ExtractionProcess",
    "ExtractionRequest",
    "default_threads",
    "one_line",
]

#: Message kinds after which the child sends nothing more.
TERMINAL = ("finished", "cancelled", "failed")
#: Niceness added to the child so that the GUI's event loop wins the CPU.
CHILD_NICENESS = 5


def default_threads() -> int:
    """Torch threads for the child: all cores but one (at least one), leaving one to the GUI."""
    return max(1, (os.cpu_count() or 2) - 1)


def one_line(exc: BaseException) -> str:
    """A one-line message for an exception: the core's own text, or type and text."""
    from napari_dfl.core.errors import DFLError

    text = " ".join(str(exc).split())
    if isinstance(exc, DFLError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class ExtractionRequest:
    """Everything the child needs to extract embeddings of one slide.

    Attributes:
        slide_path: the slide file.
        mpp: level-0 microns per pixel given by the user (None: the file's own).
        coords: ``(N, 2)`` level-0 ``(x, y)`` sample anchors.
        composition: :meth:`napari_dfl.core.sampling.Composition.to_dict` of the samples.
        store_dir: the folder of the slide's embedding stores.
        backbone: a preset or timm name (see ``core.backbones.available_backbones``).
        weights: weights source or file for the backbone (None: the preset's own).
        batch_size: samples per forward batch.
        threads: torch threads in the child (None: :func:`default_threads`).
        order: ``"spatial"`` or ``"given"`` (keep the order of ``coords``).

    """

    slide_path: str
    mpp: float | None
    coords: np.ndarray = field(repr=False)
    composition: dict
    store_dir: str
    backbone: str = "efficientnet-lite0"
    weights: str | None = None
    batch_size: int = 8
    threads: int | None = None
    order: str = "spatial"


def _child_main(request: ExtractionRequest, messages: Any, cancel: Any) -> None:
    """Entry point of the child process: load, extract, report; never raises."""
    store_path = None
    try:
        with contextlib.suppress(AttributeError, OSError):  # not POSIX, or not allowed
            os.nice(CHILD_NICENESS)
        from napari_dfl.core.backbones import load_backbone
        from napari_dfl.core.embed import (
            ExtractionCancelled,
            configure_torch_threads,
            embed_coords,
            open_store_for,
        )
        from napari_dfl.core.sampling import Composition
        from napari_dfl.core.slide import Slide

        configure_torch_threads(request.threads or default_threads())
        composition = Composition.from_dict(request.composition)
        slide = Slide(request.slide_path, mpp=request.mpp)
        slide.require_mpp()
        if cancel.is_set():
            messages.put(("cancelled", {"store": None, "message": "extraction cancelled."}))
            return
        backbone = load_backbone(request.backbone, weights=request.weights)
        store = open_store_for(slide, backbone, composition, request.store_dir)
        store_path = str(store.path)
        coords = np.asarray(request.coords, dtype=np.int64).reshape(-1, 2)
        messages.put(("started", {"store": store_path, "total": len(coords),
                                  "backbone": backbone.identity(), "dim": store.dim}))
        generator = embed_coords(slide, coords, backbone, composition, store,
                                 batch_size=request.batch_size, cancel=cancel.is_set,
                                 order=request.order)
        last = None
        try:
            for progress in generator:
                last = progress
                messages.put(("progress", {"done": progress.done, "total": progress.total,
                                           "committed": np.asarray(progress.committed)}))
        except ExtractionCancelled as exc:
            messages.put(("cancelled", {"store": store_path, "message": one_line(exc)}))
            return
        done, total = (last.done, last.total) if last is not None else (0, 0)
        messages.put(("finished", {"store": store_path, "done": done, "total": total}))
    except BaseException as exc:  # report everything: the parent must learn why
        messages.put(("failed", {"message": one_line(exc), "store": store_path}))


class ExtractionProcess:
    """A handle on one extraction running in a spawned child process.

    Example:
        >>> job = ExtractionProcess(request)            # doctest: +SKIP
        >>> job.start()                                 # doctest: +SKIP
        >>> while not job.finished:                     # doctest: +SKIP
        ...     for kind, payload in job.poll(0.1): ...

    """

    def __init__(self, request: ExtractionRequest) -> None:
        ctx = mp.get_context("spawn")
        self.request = request
        self._messages = ctx.Queue()
        self._cancel = ctx.Event()
        self._process = ctx.Process(target=_child_main, args=(request, self._messages,
                                                               self._cancel),
                                    name="napari-dfl-extraction", daemon=True)
        self.finished = False
        self.outcome: tuple[str, dict] | None = None

    def start(self) -> ExtractionProcess:
        """Start the child; returns self."""
        self._process.start()
        return self

    @property
    def is_alive(self) -> bool:
        """Whether the child process is still running."""
        return self._process.is_alive()

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was requested."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the child to stop after its current batch (what is committed stays)."""
        self._cancel.set()

    def poll(self, timeout: float = 0.0) -> list[tuple[str, dict]]:
        """Return the messages that arrived, waiting up to ``timeout`` s for the first one.

        When the child died without a final message (killed, out of memory), a
        ``("failed", ...)`` message saying so is returned and :attr:`finished` is set.
        """
        out: list[tuple[str, dict]] = []
        if self.finished:
            return out
        wait = timeout
        while True:
            try:
                message = self._messages.get(timeout=wait) if wait > 0 else \
                    self._messages.get_nowait()
            except queue_module.Empty:
                break
            out.append(message)
            wait = 0.0
            if message[0] in TERMINAL:
                self._finish(message)
                return out
        if not self._process.is_alive() and self._process.exitcode is not None:
            try:  # the last messages may still be in the pipe
                message = self._messages.get(timeout=0.5)
                out.append(message)
                if message[0] in TERMINAL:
                    self._finish(message)
                    return out
            except queue_module.Empty:
                pass
            failure = ("failed", {"message": "the extraction process ended unexpectedly "
                                  f"(exit code {self._process.exitcode}); what it committed "
                                  "is kept, extract again to finish."})
            out.append(failure)
            self._finish(failure)
        return out

    def _finish(self, message: tuple[str, dict]) -> None:
        self.finished = True
        self.outcome = message

    def _drain(self) -> None:
        with contextlib.suppress(queue_module.Empty, OSError, ValueError):
            while True:
                self._messages.get_nowait()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to exit."""
        self._process.join(timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel, wait up to ``timeout`` s, then terminate the child if it still runs."""
        import time

        self.cancel()
        deadline = time.monotonic() + timeout
        while self._process.is_alive() and time.monotonic() < deadline:
            self._drain()  # a child blocked on a full pipe could not exit
            self._process.join(0.1)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(2.0)
        self.finished = True
        self._messages.close()
        self._messages.cancel_join_thread()
