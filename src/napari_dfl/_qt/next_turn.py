"""Work asked for many times in one turn of the event loop, done once on the next turn.

A job reports every batch, and the events that arrive together are handled in one turn of
Qt's event loop. A view that redraws on each of them (a progress bar, an overlay layer)
repeats work nobody sees: each ``QProgressBar`` change repaints at once, and in a window
holding the OpenGL canvas a repaint composes the whole window (15-25 ms each in software
OpenGL); each overlay refresh uploads an image and redraws the canvas. A burst of events
then stalled the event loop for hundreds of milliseconds (``benchmarks/gui_latency.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QTimer

__all__ = ["OncePerTurn"]


class OncePerTurn:
    """Calling it asks for ``work``; it runs once, on the next turn, however often asked.

    Args:
        work: what to do (it reads the latest state itself).

    """

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work
        self.pending = False

    def __call__(self, *_args) -> None:
        if not self.pending:
            self.pending = True
            QTimer.singleShot(0, self._run)

    def _run(self) -> None:
        self.pending = False
        self.work()
