"""Embedding extraction in a separate, long-lived process, for the GUI.

Why a process: with Mesa's software OpenGL (llvmpipe), importing ``torchvision.ops`` or
``triton`` after a napari viewer has rendered segfaults the process, and ``import timm``
imports both. The backbone therefore never lives in the GUI process: a child started with
the ``spawn`` method (a fresh interpreter, no OpenGL context, no inherited Qt state) loads
it, runs :func:`napari_dfl.core.features.engine.embed_coords` into the embedding store and reports
over a queue. The GUI reads embeddings back from the store (``import torch`` alone is safe
there). A crash of the child cannot take the viewer down, and cancelling is checked between
batches: every committed batch stays in the store.

Why long-lived: starting Python, torch and timm and loading the weights takes seconds, far
longer than embedding the few samples a new annotation adds. An :class:`ExtractionService`
keeps one child, and the last backbone loaded in it, between extractions, so that auto mode
(retrain after each annotation) answers in about a second once the child is warm. One job
runs at a time; a child that died is started again by the next job.

Messages of a job are ``(kind, payload)`` tuples of plain Python/numpy values:

* ``("started", {"store": str, "total": int, "backbone": dict, "dim": int})``
* ``("progress", {"done": int, "total": int, "committed": (M, 2) int64})``
* ``("finished", {"store": str, "done": int, "total": int})``
* ``("cancelled", {"store": str | None, "message": str})``
* ``("failed", {"message": str})``: one line, the core's ``DFLError`` text where there is one.

This module imports neither Qt nor napari, nor (in the parent) torch or timm.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "TERMINAL",
    "ExtractionJob",
    "ExtractionProcess",
    "ExtractionRequest",
    "ExtractionService",
    "default_threads",
    "one_line",
]

#: Message kinds after which a job sends nothing more.
TERMINAL = ("finished", "cancelled", "failed")
#: Niceness added to the child so that the GUI's event loop wins the CPU.
CHILD_NICENESS = 5
#: Request kind that loads a backbone ahead of the first job.
PRELOAD = "preload"


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
        composition: :meth:`napari_dfl.core.slides.sampling.Composition.to_dict` of the samples.
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


# -- the child ----------------------------------------------------------------------------
def _extract_one(request: ExtractionRequest, send: Callable[[str, dict], None],
                 cancelled: Callable[[], bool], backbones: dict) -> None:
    """Run one request in the child; report through ``send``; never raises."""
    store_path = None
    try:
        from napari_dfl.core.backbones.backbone import load_backbone
        from napari_dfl.core.features.engine import (
            ExtractionCancelled,
            configure_torch_threads,
            embed_coords,
            open_store_for,
        )
        from napari_dfl.core.slides.sampling import Composition
        from napari_dfl.core.slides.tiff import Slide

        configure_torch_threads(request.threads or default_threads())
        composition = Composition.from_dict(request.composition)
        slide = Slide(request.slide_path, mpp=request.mpp)
        slide.require_mpp()
        if cancelled():
            send("cancelled", {"store": None, "message": "extraction cancelled."})
            return
        key = (request.backbone, request.weights)
        if key not in backbones:
            backbones.clear()  # one backbone at a time: they take hundreds of MB
            backbones[key] = load_backbone(request.backbone, weights=request.weights)
        backbone = backbones[key]
        store = open_store_for(slide, backbone, composition, request.store_dir)
        store_path = str(store.path)
        coords = np.asarray(request.coords, dtype=np.int64).reshape(-1, 2)
        send("started", {"store": store_path, "total": len(coords),
                         "backbone": backbone.identity(), "dim": store.dim})
        generator = embed_coords(slide, coords, backbone, composition, store,
                                 batch_size=request.batch_size, cancel=cancelled,
                                 order=request.order)
        last = None
        try:
            for progress in generator:
                last = progress
                send("progress", {"done": progress.done, "total": progress.total,
                                  "committed": np.asarray(progress.committed)})
        except ExtractionCancelled as exc:
            send("cancelled", {"store": store_path, "message": one_line(exc)})
            return
        done, total = (last.done, last.total) if last is not None else (0, 0)
        send("finished", {"store": store_path, "done": done, "total": total})
    except BaseException as exc:  # report everything: the parent must learn why
        send("failed", {"message": one_line(exc), "store": store_path})


def _preload(backbone: str, weights: str | None, backbones: dict) -> dict:
    """Load a backbone into the child's cache ahead of the first job; never raises."""
    try:
        from napari_dfl.core.backbones.backbone import load_backbone
        from napari_dfl.core.features.engine import configure_torch_threads

        configure_torch_threads(default_threads())
        key = (backbone, weights)
        if key not in backbones:
            loaded = load_backbone(backbone, weights=weights)
            backbones.clear()
            backbones[key] = loaded
        return {"backbone": backbone, "ok": True}
    except BaseException as exc:  # the job that needs it will report the error
        return {"backbone": backbone, "ok": False, "message": one_line(exc)}


def _service_main(requests: Any, messages: Any, cancel_id: Any) -> None:
    """Entry point of the child: run requests one by one until ``None`` arrives."""
    with contextlib.suppress(AttributeError, OSError):  # not POSIX, or not allowed
        os.nice(CHILD_NICENESS)
    backbones: dict = {}
    while True:
        item = requests.get()
        if item is None:
            return
        if item[0] == PRELOAD:
            messages.put((0, "preloaded", _preload(item[1], item[2], backbones)))
            continue
        job_id, request = item

        def send(kind: str, payload: dict, job_id: int = job_id) -> None:
            messages.put((job_id, kind, payload))

        _extract_one(request, send, lambda job_id=job_id: cancel_id.value == job_id,
                     backbones)


# -- the parent ---------------------------------------------------------------------------
class ExtractionService:
    """One long-lived extraction child that keeps its backbone loaded between jobs.

    The child starts with the first job and again after it died; :meth:`close` stops it.
    Only one job may run at a time (the panel's job runner ensures it).
    """

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._process = None
        self._requests = None
        self._messages = None
        self._cancel_id = self._ctx.Value("q", 0, lock=False)
        self.preloaded: dict[str, dict] = {}  # backbone -> the child's preload report

    @property
    def process(self):
        """The child process (None before the first job or after :meth:`close`)."""
        return self._process

    @property
    def warm(self) -> bool:
        """Whether a child is running (its backbone may already be loaded)."""
        return self._process is not None and self._process.is_alive()

    def preload(self, backbone: str, weights: str | None = None) -> None:
        """Start the child (if needed) and load ``backbone`` in it while the user annotates.

        The first extraction then starts embedding at once instead of after the seconds
        it takes to import torch and timm and load the weights. Failures are silent here:
        the job that needs the backbone reports them.
        """
        with self._lock:
            if not self.warm:
                self._spawn()
            self._requests.put((PRELOAD, backbone, weights))

    def wait_preloaded(self, backbone: str, timeout: float) -> dict | None:
        """Wait (no job running) until the child reports ``backbone`` preloaded; its report."""
        deadline = time.monotonic() + timeout
        while backbone not in self.preloaded and time.monotonic() < deadline:
            self._get(0.2)
        return self.preloaded.get(backbone)

    def job(self, request: ExtractionRequest) -> ExtractionJob:
        """A job for ``request``, not started yet (``start()`` submits it)."""
        return ExtractionJob(self, request, next(self._ids))

    def _submit(self, job: ExtractionJob) -> None:
        with self._lock:
            if not self.warm:
                self._spawn()
            self._requests.put((job.id, job.request))

    def _spawn(self) -> None:
        self._discard_queues()
        self.preloaded = {}
        self._requests, self._messages = self._ctx.Queue(), self._ctx.Queue()
        self._process = self._ctx.Process(
            target=_service_main, args=(self._requests, self._messages, self._cancel_id),
            name="napari-dfl-extraction", daemon=True)
        self._process.start()

    def _cancel(self, job_id: int) -> None:
        self._cancel_id.value = job_id

    def _get(self, timeout: float) -> tuple | None:
        """The next job message; the child's own reports (job id 0) are recorded, skipped."""
        if self._messages is None:
            return None
        while True:
            try:
                item = self._messages.get(timeout=timeout) if timeout > 0 else \
                    self._messages.get_nowait()
            except (queue_module.Empty, OSError, ValueError, EOFError):
                return None
            if item[0] != 0:
                return item
            if item[1] == "preloaded":
                self.preloaded[item[2]["backbone"]] = item[2]

    def kill(self) -> None:
        """Stop the child at once (a job that will not stop); the next job starts another."""
        with self._lock:
            if self._process is not None and self._process.is_alive():
                self._process.terminate()
                self._process.join(2.0)
            self._process = None
            self._discard_queues()

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to exit after its current job, then stop it if it lingers."""
        with self._lock:
            process = self._process
            if process is not None and process.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    self._requests.put(None)
                deadline = time.monotonic() + timeout
                while process.is_alive() and time.monotonic() < deadline:
                    self._drain()
                    process.join(0.1)
                if process.is_alive():
                    process.terminate()
                    process.join(2.0)
            self._process = None
            self._discard_queues()

    def _drain(self) -> None:
        while self._get(0.0) is not None:
            pass  # a child blocked on a full pipe could not exit

    def _discard_queues(self) -> None:
        for q in (self._requests, self._messages):
            if q is not None:
                with contextlib.suppress(OSError, ValueError):
                    q.close()
                    q.cancel_join_thread()
        self._requests = self._messages = None


class ExtractionJob:
    """A handle on one extraction run by an :class:`ExtractionService`.

    Example:
        >>> job = service.job(request).start()          # doctest: +SKIP
        >>> while not job.finished:                     # doctest: +SKIP
        ...     for kind, payload in job.poll(0.1): ...

    """

    def __init__(self, service: ExtractionService, request: ExtractionRequest,
                 job_id: int) -> None:
        self.service, self.request, self.id = service, request, job_id
        self.finished = False
        self.outcome: tuple[str, dict] | None = None
        self._cancelled = False

    def start(self) -> ExtractionJob:
        """Submit the job to the service's child (started when needed); returns self."""
        self.service._submit(self)
        return self

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was requested."""
        return self._cancelled

    def cancel(self) -> None:
        """Ask the child to stop after its current batch (what is committed stays)."""
        self._cancelled = True
        self.service._cancel(self.id)

    def poll(self, timeout: float = 0.0) -> list[tuple[str, dict]]:
        """Return this job's messages that arrived, waiting up to ``timeout`` s for one.

        When the child died without a final message (killed, out of memory), a
        ``("failed", ...)`` message saying so is returned and :attr:`finished` is set.
        """
        out: list[tuple[str, dict]] = []
        if self.finished:
            return out
        wait = timeout
        while (item := self.service._get(wait)) is not None:
            wait = 0.0
            job_id, kind, payload = item
            if job_id != self.id:
                continue  # a late message of an earlier, abandoned job
            out.append((kind, payload))
            if kind in TERMINAL:
                self._finish((kind, payload))
                return out
        process = self.service.process
        if process is None or not process.is_alive():
            item = self.service._get(0.5)  # the last messages may still be in the pipe
            if item is not None and item[0] == self.id:
                out.append(item[1:])
                if item[1] in TERMINAL:
                    self._finish(item[1:])
                    return out
            code = None if process is None else process.exitcode
            failure = ("failed", {"message": "the extraction process ended unexpectedly "
                                  f"(exit code {code}); what it committed is kept, "
                                  "extract again to finish."})
            out.append(failure)
            self._finish(failure)
            self.service.kill()
        return out

    def _finish(self, message: tuple[str, dict]) -> None:
        self.finished = True
        self.outcome = message

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel and wait up to ``timeout`` s for the job to end; kill the child if not."""
        if self.finished:
            return
        self.cancel()
        deadline = time.monotonic() + timeout
        while not self.finished and time.monotonic() < deadline:
            self.poll(0.1)
        if not self.finished:
            self.service.kill()
            self._finish(("cancelled", {"store": None, "message": "extraction stopped."}))


class ExtractionProcess(ExtractionJob):
    """A one-off extraction in a child of its own, stopped when the job ends (scripts, tests)."""

    def __init__(self, request: ExtractionRequest) -> None:
        super().__init__(ExtractionService(), request, next(ExtractionService._ids))

    @property
    def is_alive(self) -> bool:
        """Whether the child process is still running."""
        return self.service.warm

    def _finish(self, message: tuple[str, dict]) -> None:
        super()._finish(message)
        self.service.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to exit."""
        self.service.close(timeout or 5.0)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel, wait up to ``timeout`` s, then stop the child."""
        super().shutdown(timeout)
        self.service.close()
