"""The explorer's background work: slow computations off the GUI thread, one per key.

Clustering 100,000 embeddings, their false colours, a head's probabilities or a dozen
patches read from slide files would each stall the window for a noticeable time. They run
in napari thread workers; the result is handed back on the GUI thread. A task is known by
its key: asking again for a key that is running does not start it twice, and
:meth:`Background.forget` makes the results of earlier requests be dropped (the explorer
loaded other tiles meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Background"]


class Background:
    """Runs functions in napari thread workers and calls back on the GUI thread."""

    def __init__(self, on_error: Callable[[str, Exception], None] | None = None) -> None:
        self.on_error = on_error
        self.generation = 0
        self._running: dict[tuple[int, object], Any] = {}  # (generation, key) -> worker

    @property
    def busy(self) -> bool:
        """Whether a task is running."""
        return bool(self._running)

    def running(self, key: object) -> bool:
        """Whether the task ``key`` (asked for since the last :meth:`forget`) is running."""
        return (self.generation, key) in self._running

    def run(self, key: object, compute: Callable[[], Any],
            done: Callable[[Any], None]) -> bool:
        """Run ``compute()`` in a thread, then ``done(result)`` on the GUI thread.

        Returns False (and starts nothing) when ``key`` is already running. ``done`` is not
        called when :meth:`forget` was called after this request.
        """
        from napari.qt.threading import create_worker

        generation = self.generation
        if (generation, key) in self._running:
            return False
        worker = create_worker(compute, _start_thread=False, _ignore_errors=True)

        def returned(result: Any) -> None:
            if generation == self.generation:
                done(result)

        def errored(exc: Exception) -> None:
            if generation == self.generation and self.on_error is not None:
                self.on_error(str(key), exc)

        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(lambda: self._running.pop((generation, key), None))
        self._running[(generation, key)] = worker
        worker.start()
        return True

    def forget(self) -> None:
        """Drop the results of every request made so far.

        They still finish; the same keys may be asked for again at once.
        """
        self.generation += 1

    def wait(self, timeout: float = 120.0) -> bool:
        """Process Qt events until no task runs (for scripts); False on timeout."""
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while self._running and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)
        QApplication.processEvents()
        return not self._running
