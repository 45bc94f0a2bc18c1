"""Running the session's jobs in napari thread workers, and keeping the GUI process safe.

:class:`QtRunner` is the panel's :class:`~napari_dfl.workflows.session.Runner`: one job at a
time in a napari ``thread_worker``; its events and its outcome are delivered on the GUI
thread, where the session applies them. Nothing here raises into Qt.

Two guards for the GUI process: :func:`keep_triton_out` (loading triton's LLVM after a
viewer rendered with Mesa's llvmpipe segfaults the process) and :func:`warm_up_training`
(the first torch optimizer of a process imports ``torch._dynamo``, about a second that
would otherwise stall the first Train).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtCore import QObject

from napari_dfl.core.errors import Cancelled

__all__ = ["QtRunner", "keep_triton_out", "notify", "warm_up_training"]


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
    """Warm the head's training path in a background thread; returns the thread.

    The first head of a process pays imports (``torch._dynamo`` for the optimizer,
    scikit-learn for splits and metrics) and torch's first autograd pass: 2-3 s here, which
    stalled the event loop for ~300 ms and made the first Train seconds slower than the next
    (:func:`napari_dfl.workflows.train.warm_up_heads`). Done while the user is still
    annotating, the first Train costs what the second does.
    """
    def warm() -> None:
        with contextlib.suppress(Exception):  # a warm-up must never break the panel
            from napari_dfl.workflows.train import warm_up_heads

            warm_up_heads()

    thread = threading.Thread(target=warm, name="napari-dfl-warm-up", daemon=True)
    thread.start()
    return thread


def notify(kind: str, message: str) -> None:
    """Show a napari notification (``kind``: info, warning or error); never a dialog."""
    from napari.utils import notifications

    {"info": notifications.show_info, "warning": notifications.show_warning,
     "error": notifications.show_error}[kind](message)


def _guarded(factory: Callable, cancel: threading.Event, done: threading.Event) -> Generator:
    """Run a job generator; turn its end (result, cancel or error) into the returned value."""
    try:
        result = yield from factory(cancel.is_set)
        return "ok", result
    except Cancelled as exc:
        return "cancelled", exc
    except Exception as exc:  # reported on the GUI thread, never raised into Qt
        return "error", exc
    finally:
        done.set()


class QtRunner(QObject):
    """Runs one job at a time in a napari thread worker (see the module docstring)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name: str | None = None
        self.worker = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._done.set()

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        return self.name is not None

    def start(self, name: str, factory: Callable, on_event: Callable[[str, Any], None],
              on_outcome: Callable[[str, Any], None]) -> bool:
        """Start a job unless one runs (see ``Runner.start``)."""
        from napari.qt.threading import create_worker

        if self.busy:
            return False
        self.name = name
        self._cancel, self._done = threading.Event(), threading.Event()
        worker = create_worker(_guarded, factory, self._cancel, self._done,
                               _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(lambda event: on_event(*event))
        worker.returned.connect(lambda outcome: self._finish(on_outcome, outcome))
        self.worker = worker
        worker.start()
        return True

    def _finish(self, on_outcome, outcome) -> None:
        self.name, self.worker = None, None
        on_outcome(*outcome)

    def cancel(self) -> None:
        """Ask the running job to stop (after its current batch or epoch)."""
        self._cancel.set()

    def wait(self, timeout: float) -> bool:
        """Block until the job's generator ended (tests, shutdown); True when it did."""
        return self._done.wait(timeout)

    def shutdown(self, timeout: float = 15.0) -> None:
        """Cancel the running job and wait up to ``timeout`` s for it to end."""
        if self.busy:
            self._cancel.set()
            self._done.wait(timeout)
