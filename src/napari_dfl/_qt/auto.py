"""Auto mode: after each annotation change, embed what is missing, retrain and predict.

Changes are debounced (a burst of edits gives one run); a change that arrives while a job
runs is remembered and runs once the job ends. Nothing starts until the annotations hold
two classes, and the status line says so instead of a notification per edit.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer

__all__ = ["AUTO_DELAY_MS", "AutoMode"]

#: Quiet time after the last annotation change before auto mode runs (ms).
AUTO_DELAY_MS = 800


class AutoMode(QObject):
    """Calls ``run()`` (the panel's auto step) after annotation changes while enabled."""

    def __init__(self, session, run: Callable[[], bool], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session, self._run = session, run
        self.enabled = False
        self.pending = False
        self.runs = 0  # auto runs started (tests and the status line read it)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(AUTO_DELAY_MS)
        self.timer.timeout.connect(self._fire)
        session.annotations_changed.connect(self.annotations_changed)
        session.job_changed.connect(self._on_job)

    def set_enabled(self, enabled: bool) -> None:
        """Turn auto mode on (runs once at once when annotations allow) or off."""
        self.enabled = bool(enabled)
        self.pending = False
        if self.enabled:
            self.timer.start()
        else:
            self.timer.stop()

    def annotations_changed(self) -> None:
        """Restart the quiet-time timer (called on every annotation change)."""
        if self.enabled:
            self.timer.start()

    def _fire(self) -> None:
        if not self.enabled:
            return
        if self.session.busy:
            self.pending = True
            return
        self.pending = False
        if self._run():
            self.runs += 1

    def _on_job(self, job) -> None:
        if job is None and self.enabled and self.pending:
            self.timer.start()
