"""UMAP and PCA projections in one long-lived child process, for the panel.

Why a child: UMAP's numba compilation and threads stay out of the GUI process (a crash or a
long compile cannot freeze the viewer), and Cancel can stop a computation that has no place
to check a flag: the child is terminated.

Why long-lived: the first UMAP of a process compiles umap-learn's numba code (15-40 s on
2 cores for 1,000 points), the next ones run in seconds. A :class:`ProjectionService` keeps
one child between projections, and the child keeps numba's compiled code on disk
(:func:`~napari_dfl.core.explorer.numba_cache.keep_compiled_code`, in the user's cache
folder), so even the first UMAP of the next session skips most of the compilation. A
cancelled projection ends the child; the next projection starts a fresh one.

This module imports neither Qt nor napari, nor (in the parent) umap.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from napari_dfl.core.errors import Cancelled, DFLError, one_line
from napari_dfl.core.util.paths import cache_dir
from napari_dfl.core.util.process import exit_with_parent

__all__ = ["ProjectionService", "numba_cache_dir", "shared_projection_service"]

#: Environment variable naming the folder of numba's compiled code (default: user cache).
NUMBA_CACHE_ENV = "NAPARI_DFL_NUMBA_CACHE"


def numba_cache_dir() -> Path:
    """Where the projection child keeps numba's compiled code."""
    override = os.environ.get(NUMBA_CACHE_ENV)
    return Path(override).expanduser() if override else cache_dir() / "numba"


def _child_main(requests, results, cache_folder: str) -> None:
    """The child: answer ``(job id, store paths, method)`` requests until ``None`` arrives."""
    exit_with_parent()  # a killed panel leaves no projection running
    from napari_dfl.core.explorer.numba_cache import keep_compiled_code

    keep_compiled_code(cache_folder)
    from napari_dfl.core.explorer.projection import project_store_paths

    while True:
        request = requests.get()
        if request is None:
            return
        job_id, paths, method = request
        try:
            results.put((job_id, "ok", project_store_paths(paths, method)))
        except BaseException as exc:  # report everything: the parent must learn why
            results.put((job_id, "error", one_line(exc)))


class ProjectionService:
    """One projection child, started on the first projection and kept for the next ones."""

    def __init__(self, cache_folder: str | os.PathLike | None = None) -> None:
        self._ctx = mp.get_context("spawn")
        self._cache_folder = str(cache_folder or numba_cache_dir())
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._process = None
        self._requests = self._results = None

    @property
    def alive(self) -> bool:
        """Whether a child is running (its numba code may already be compiled)."""
        return self._process is not None and self._process.is_alive()

    def project(self, store_paths: Sequence[str], method: str, cancel,
                ) -> Generator[tuple[str, float], None, list[np.ndarray]]:
        """Project stores together in the child; yields ``("waiting", seconds)`` meanwhile.

        Returns the ``(N_i, 2)`` coordinates of each store. ``cancel()`` returning True ends
        the child at once and raises :class:`Cancelled` (nothing partial is cached).

        Raises:
            DFLError: the projection failed (its message), or the child died.
        """
        with self._lock:
            if not self.alive:
                self._spawn()
            job_id = next(self._ids)
            requests, results, process = self._requests, self._results, self._process
            requests.put((job_id, list(map(str, store_paths)), method))
        start = time.monotonic()
        while True:
            if cancel():
                self._stop(process)
                raise Cancelled(f"{method.upper()} projection cancelled.")
            try:
                answer_id, status, value = results.get(timeout=0.2)
            except queue.Empty:
                if not process.is_alive():
                    self._stop(process)
                    raise DFLError(f"the {method.upper()} process ended unexpectedly (exit "
                                   f"code {process.exitcode}); try again.") from None
                yield "waiting", time.monotonic() - start
                continue
            if answer_id != job_id:
                continue  # the answer of an abandoned job
            if status == "error":
                raise DFLError(value)
            return value

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to exit, then stop it if it lingers."""
        with self._lock:
            process = self._process
            if process is not None and process.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    self._requests.put(None)
                process.join(timeout)
            self._stop_locked(process)

    def _spawn(self) -> None:
        self._requests, self._results = self._ctx.Queue(), self._ctx.Queue()
        self._process = self._ctx.Process(
            target=_child_main, args=(self._requests, self._results, self._cache_folder),
            name="napari-dfl-projection", daemon=True)
        self._process.start()

    def _stop(self, process) -> None:
        with self._lock:
            self._stop_locked(process)

    def _stop_locked(self, process) -> None:
        """End ``process`` if it is still this service's child; forget its queues."""
        if process is None or process is not self._process:
            return
        if process.is_alive():
            process.terminate()
            process.join(2.0)
        for channel in (self._requests, self._results):
            with contextlib.suppress(Exception):
                channel.cancel_join_thread()
                channel.close()
        self._process = self._requests = self._results = None


_SHARED: ProjectionService | None = None


def shared_projection_service() -> ProjectionService:
    """The process's projection child (one for all panels); closed when the process exits."""
    global _SHARED
    if _SHARED is None:
        import atexit

        _SHARED = ProjectionService()
        atexit.register(_SHARED.close)
    return _SHARED
