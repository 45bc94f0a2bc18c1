"""One background job at a time: a napari thread worker, a progress bar and a Cancel.

A job is a generator factory ``factory(token)`` from :mod:`napari_dfl.workflows.panel_jobs`; it
runs in a napari ``thread_worker`` and never raises into Qt: its outcome comes back as
``("ok", result)``, ``("cancelled", message)`` or ``("error", exception)``, and errors
become napari notifications. A second start while a job runs is refused with a
notification; :meth:`JobRunner.shutdown` (viewer closing) cancels and waits briefly.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Generator

from qtpy.QtCore import QObject, Signal

from napari_dfl.core.errors import DFLError
from napari_dfl.workflows.extraction_service import one_line
from napari_dfl.workflows.panel_jobs import CancelToken, JobCancelled

Factory = Callable[[CancelToken], Generator]

_CANCELLED_NAMES = ("ExtractionCancelled", "TrainingCancelled")


def keep_triton_out() -> bool:
    """Stop ``triton`` from being imported into the GUI process; True when now blocked.

    With Mesa's software OpenGL (llvmpipe), loading triton's LLVM after a viewer rendered
    segfaults the process, and creating a torch optimizer (head training) imports
    ``torch._dynamo``, which imports triton when it is installed. The GUI never compiles
    kernels (the backbone runs in a child process), so it needs no triton; torch treats a
    blocked triton as absent. Nothing is done when triton is already loaded (it was
    imported before any rendering, which is safe).
    """
    if "triton" in sys.modules:
        return sys.modules["triton"] is None
    sys.modules["triton"] = None  # type: ignore[assignment]  # import raises ImportError
    return True


def warm_up_training() -> threading.Thread:
    """Create a throw-away torch optimizer in a background thread; returns the thread.

    The first optimizer of a process imports ``torch._dynamo`` (about a second of imports
    that hold the GIL in bursts). Doing it while the user is still annotating keeps that
    out of the first Train, where it stalled the event loop for ~300 ms.
    """
    def warm() -> None:
        with contextlib.suppress(Exception):  # a warm-up must never break the panel
            import torch

            torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])

    thread = threading.Thread(target=warm, name="napari-dfl-warm-up", daemon=True)
    thread.start()
    return thread


def notify(kind: str, message: str) -> None:
    """Show a napari notification (``kind``: info, warning or error); never a dialog."""
    from napari.utils import notifications

    {"info": notifications.show_info, "warning": notifications.show_warning,
     "error": notifications.show_error}[kind](message)


def _guarded(factory: Factory, token: CancelToken, done: threading.Event) -> Generator:
    """Run a job generator; turn its end (result, cancel or error) into a returned value."""
    try:
        result = yield from factory(token)
        return "ok", result
    except JobCancelled as exc:
        return "cancelled", str(exc)
    except Exception as exc:
        if type(exc).__name__ in _CANCELLED_NAMES:
            return "cancelled", one_line(exc)
        return "error", exc
    finally:
        done.set()


class JobRunner(QObject):
    """Runs at most one job; tracks it with a napari progress bar.

    Signals:
        busy_changed(bool): a job started (True) or ended (False).

    """

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name: str | None = None
        self.token: CancelToken | None = None
        self.worker = None
        self._done = threading.Event()
        self._done.set()
        self._progress = None

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        return self.name is not None

    def start(self, name: str, factory: Factory, on_event: Callable[[str, object], None],
              on_done: Callable[[object], None] | None = None) -> bool:
        """Start a job unless one runs; False (and a notification) when busy.

        Args:
            name: what the user sees (``"Extract"``, ``"Train"``, ``"Predict"``).
            factory: ``factory(token)`` returns the job's generator of ``(kind, payload)``.
            on_event: called on the GUI thread with every yielded event.
            on_done: called on the GUI thread with the job's result when it succeeded.

        """
        from napari.qt.threading import create_worker
        from napari.utils import progress

        if self.busy:
            notify("info", f"{self.name} is still running: wait for it or press Cancel.")
            return False
        self.name, self.token = name, CancelToken()
        self._done = threading.Event()
        self._progress = progress(total=0, desc=name)
        worker = create_worker(_guarded, factory, self.token, self._done,
                               _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(lambda event: self._on_event(event, on_event))
        worker.returned.connect(lambda outcome: self._on_returned(outcome, on_done))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.busy_changed.emit(True)
        worker.start()
        return True

    def cancel(self) -> None:
        """Ask the running job to stop (after its current batch or epoch)."""
        if self.token is not None:
            self.token.cancel()

    def shutdown(self, timeout: float = 15.0) -> None:
        """Cancel the running job and wait up to ``timeout`` s for it to end."""
        token = self.token
        if token is None:
            return
        token.cancel()
        process = token.process
        if process is not None:
            process.shutdown(timeout=min(timeout, 10.0))
        self._done.wait(timeout)

    def wait(self, timeout: float) -> bool:
        """Block until the job's generator ended (tests, shutdown); True when it did."""
        return self._done.wait(timeout)

    # -- worker callbacks (GUI thread) ---------------------------------------------------
    def _on_event(self, event, on_event) -> None:
        kind, payload = event
        if kind == "progress" and self._progress is not None:
            self._progress.total = int(payload["total"])
            self._progress.n = int(payload["done"])
            self._progress.refresh()
        elif kind == "epoch" and self._progress is not None:
            self._progress.total = int(payload.max_epochs)
            self._progress.n = int(payload.epoch)
            self._progress.refresh()
        elif kind == "started" and self._progress is not None:
            self._progress.set_description(f"{self.name}: embedding")
        on_event(kind, payload)

    def _on_returned(self, outcome, on_done) -> None:
        status, value = outcome
        if status == "ok":
            if on_done is not None:
                on_done(value)
        elif status == "cancelled":
            notify("info", f"{self.name} cancelled: {value}")
        elif isinstance(value, DFLError):
            notify("error", f"{self.name}: {one_line(value)}")
        else:
            notify("error", f"{self.name} failed: {one_line(value)}")

    def _on_finished(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.name, self.token, self.worker = None, None, None
        self.busy_changed.emit(False)
