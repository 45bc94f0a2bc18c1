"""Embedding extraction in a separate, long-lived process, for the GUI.

Why a process: with Mesa's software OpenGL (llvmpipe), importing ``torchvision.ops`` or
``triton`` after a napari viewer has rendered segfaults the process, and ``import timm``
imports both. The backbone therefore never lives in the GUI process: a child started with
the ``spawn`` method (a fresh interpreter, no OpenGL context, no inherited Qt state) loads
it, embeds with a :class:`~napari_dfl.workflows.embedding.local.LocalEmbedder` into the embedding
store and reports over a queue. The GUI reads embeddings back from the store (``import
torch`` alone is safe there). A crash of the child cannot take the viewer down, and
cancelling is checked between batches: every committed batch stays in the store.

Why long-lived: starting Python, torch and timm and loading the weights takes seconds, far
longer than embedding the few samples a new annotation adds. An :class:`ExtractionService`
keeps one child, and the last backbone loaded in it, between extractions, so that auto mode
(retrain after each annotation) answers in about a second once the child is warm. One job
runs at a time; a child that died is started again by the next job.

Messages of a job are ``(kind, payload)`` tuples of plain Python/numpy values:

* ``("started", {"store": str, "done": int, "total": int, "backbone": dict, "dim": int})``
* ``("progress", {"done": int, "total": int, "computed": int, "rate": float,
  "committed": (M, 2) int64})``
* ``("finished", {"store": str, "done": int, "total": int})``
* ``("cancelled", {"store": str | None, "message": str})``
* ``("failed", {"message": str})``: one line, the core's ``DFLError`` text where there is one.

This module imports neither Qt nor napari, nor (in the parent) torch or timm.
"""

from __future__ import annotations

import collections
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

from napari_dfl.core.errors import Cancelled, one_line
from napari_dfl.core.features.engine import configure_torch_threads
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.slides.tiff import Slide
from napari_dfl.core.util.process import exit_with_parent
from napari_dfl.workflows.embedding.backbone_cache import cached_backbone
from napari_dfl.workflows.embedding.local import LocalEmbedder

__all__ = [
    "TERMINAL",
    "ExtractionJob",
    "ExtractionProcess",
    "ExtractionRequest",
    "ExtractionService",
    "default_threads",
    "shared_service",
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


@dataclass(frozen=True)
class ExtractionRequest:
    """Everything the child needs to extract embeddings of one slide.

    Attributes:
        slide_path: the slide file.
        mpp: level-0 microns per pixel given by the user (None: the file's own).
        coords: ``(N, 2)`` level-0 ``(x, y)`` sample anchors.
        settings: backbone, composition, store folder and batch size.
        order: ``"spatial"`` or ``"given"`` (keep the order of ``coords``).
        threads: torch threads in the child (None: :func:`default_threads`).

    """

    slide_path: str
    mpp: float | None
    coords: np.ndarray = field(repr=False)
    settings: Settings = field(default_factory=Settings)
    order: str = "spatial"
    threads: int | None = None


# -- the child ----------------------------------------------------------------------------
def _extract_one(request: ExtractionRequest, send: Callable[[str, dict], None],
                 cancelled: Callable[[], bool]) -> None:
    """Run one request in the child; report through ``send``; never raises."""
    store_path = None
    try:
        configure_torch_threads(request.threads or default_threads())
        slide = Slide(request.slide_path, mpp=request.mpp)
        slide.require_mpp()
        if cancelled():
            send("cancelled", {"store": None, "message": "extraction cancelled."})
            return
        embedder = LocalEmbedder(request.settings)
        store = embedder.known_store(slide)
        store_path = str(store.path)
        coords = np.asarray(request.coords, dtype=np.int64).reshape(-1, 2)
        done = len(coords) - int(store.missing(np.unique(coords, axis=0)).sum()) \
            if len(coords) else 0
        send("started", {"store": store_path, "done": done,
                         "total": len(np.unique(coords, axis=0)) if len(coords) else 0,
                         "backbone": embedder.backbone.identity(), "dim": store.dim})
        last = None
        try:
            for progress in embedder.embed(slide, coords, cancelled, request.order):
                last = progress
                send("progress", {"done": progress.done, "total": progress.total,
                                  "computed": progress.computed, "rate": progress.rate,
                                  "committed": np.asarray(progress.committed)})
        except Cancelled as exc:
            send("cancelled", {"store": store_path, "message": one_line(exc)})
            return
        done, total = (last.done, last.total) if last is not None else (0, 0)
        send("finished", {"store": store_path, "done": done, "total": total})
    except BaseException as exc:  # report everything: the parent must learn why
        send("failed", {"message": one_line(exc), "store": store_path})


def _preload(settings: Settings) -> dict:
    """Load a backbone into the child's cache ahead of the first job; never raises.

    The report carries the backbone's identity, from which the parent finds the stores
    this backbone wrote without asking the child again.
    """
    report = {"backbone": settings.backbone, "weights": settings.weights}
    try:
        configure_torch_threads(default_threads())
        return {**report, "ok": True, "identity": cached_backbone(settings).identity()}
    except BaseException as exc:  # the job that needs it will report the error
        return {**report, "ok": False, "message": one_line(exc)}


def _service_main(requests: Any, messages: Any, cancel_id: Any) -> None:
    """Entry point of the child: run requests one by one until ``None`` arrives.

    The child ends with its parent (:func:`exit_with_parent`): batches already committed
    stay in the store, the one in flight is not committed.
    """
    exit_with_parent()
    with contextlib.suppress(AttributeError, OSError):  # not POSIX, or not allowed
        os.nice(CHILD_NICENESS)
    while True:
        item = requests.get()
        if item is None:
            return
        if item[0] == PRELOAD:
            messages.put((0, "preloaded", _preload(item[1])))
            continue
        job_id, request = item

        def send(kind: str, payload: dict, job_id: int = job_id) -> None:
            messages.put((job_id, kind, payload))

        _extract_one(request, send, lambda job_id=job_id: cancel_id.value == job_id)


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
        self._read_lock = threading.Lock()
        self._inbox: dict[int, collections.deque] = {}  # job id -> its messages, in order
        self._current = 0  # the job whose messages are kept (late ones of others are not)
        self.preloaded: dict[str, dict] = {}  # backbone -> the child's preload report

    @property
    def process(self):
        """The child process (None before the first job or after :meth:`close`)."""
        return self._process

    @property
    def warm(self) -> bool:
        """Whether a child is running (its backbone may already be loaded)."""
        return self._process is not None and self._process.is_alive()

    def preload(self, settings: Settings) -> None:
        """Start the child (if needed) and load the settings' backbone while the user annotates.

        The first extraction then starts embedding at once instead of after the seconds
        it takes to import torch and timm and load the weights. Failures are silent here:
        the job that needs the backbone reports them.
        """
        with self._lock:
            if not self.warm:
                self._spawn()
            self._requests.put((PRELOAD, settings))

    def wait_preloaded(self, backbone: str, timeout: float) -> dict | None:
        """Wait until the child reports ``backbone`` preloaded; its report (None: not yet)."""
        deadline = time.monotonic() + timeout
        while backbone not in self.preloaded and time.monotonic() < deadline:
            self._pump(0.2)
        return self.preloaded.get(backbone)

    def backbone_identity(self, settings: Settings) -> dict | None:
        """The identity of the settings' backbone, if the child already reported it loaded.

        Never waits and never starts anything: what has arrived is read, that is all.
        """
        while self._pump(0.0):
            pass
        report = self.preloaded.get(settings.backbone)
        if report and report.get("ok") and report.get("weights") == settings.weights:
            return report.get("identity")
        return None

    def job(self, request: ExtractionRequest) -> ExtractionJob:
        """A job for ``request``, not started yet (``start()`` submits it)."""
        return ExtractionJob(self, request, next(self._ids))

    def _submit(self, job: ExtractionJob) -> None:
        with self._lock:
            if not self.warm:
                self._spawn()
            self._current = job.id
            self._inbox = {job.id: collections.deque()}
            self._requests.put((job.id, job.request))

    def _spawn(self) -> None:
        self._discard_queues()
        self.preloaded = {}
        self._inbox = {}
        self._requests, self._messages = self._ctx.Queue(), self._ctx.Queue()
        self._process = self._ctx.Process(
            target=_service_main, args=(self._requests, self._messages, self._cancel_id),
            name="napari-dfl-extraction", daemon=True)
        self._process.start()

    def _cancel(self, job_id: int) -> None:
        self._cancel_id.value = job_id

    def _pump(self, timeout: float) -> bool:
        """Move one message from the child into its job's inbox (or record a report).

        Any thread may pump (a job polling, the GUI asking for the backbone identity):
        messages always reach their own job. Returns True when a message was read.
        """
        messages = self._messages
        if messages is None:
            return False
        with self._read_lock:
            try:
                item = messages.get(timeout=timeout) if timeout > 0 else messages.get_nowait()
            except (queue_module.Empty, OSError, ValueError, EOFError):
                return False
        if item[0] == 0:
            if item[1] == "preloaded":
                self.preloaded[item[2]["backbone"]] = item[2]
        elif item[0] == self._current:
            self._inbox.setdefault(item[0], collections.deque()).append(item[1:])
        return True  # a late message of an earlier, abandoned job is dropped

    def _take(self, job_id: int) -> tuple | None:
        """The next message of a job from its inbox, or None."""
        inbox = self._inbox.get(job_id)
        return inbox.popleft() if inbox else None

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
        while self._pump(0.0):
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
        service = self.service
        deadline = time.monotonic() + timeout
        while True:
            while (item := service._take(self.id)) is not None:
                out.append(item)
                if item[0] in TERMINAL:
                    self._finish(item)
                    return out
            if out or not service._pump(max(0.0, deadline - time.monotonic())):
                break
        process = service.process
        if process is None or not process.is_alive():
            while service._pump(0.5):  # the last messages may still be in the pipe
                pass
            while (item := service._take(self.id)) is not None:
                out.append(item)
                if item[0] in TERMINAL:
                    self._finish(item)
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


_SHARED: ExtractionService | None = None


def shared_service() -> ExtractionService:
    """The process's extraction child (one for all panels; it keeps its backbone).

    Closed when the process exits.
    """
    global _SHARED
    if _SHARED is None:
        import atexit

        _SHARED = ExtractionService()
        atexit.register(_SHARED.close)
    return _SHARED
