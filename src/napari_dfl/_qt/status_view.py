"""The panel's status area: the last message in full, and the running job's progress.

Messages are shown whole (word-wrapped), errors in a warning colour, so an instruction is
never cut off as in a toast; the progress bar says what the job does, how far it is and,
when it can tell, how long is left.

The bar shows the latest of the job's events once per turn of the event loop
(:class:`~napari_dfl._qt.next_turn.OncePerTurn`), however many arrived in it.
"""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from napari_dfl._qt.next_turn import OncePerTurn

__all__ = ["StatusView"]

_ERROR_STYLE = "QLabel { color: #ffb454; }"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


class StatusView(QWidget):
    """Status line and progress bar over a session."""

    def __init__(self, session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.label = QLabel(session.status
                            or "Pick a slide, add classes, draw regions or points.")
        self.label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.progress)
        layout.addWidget(self.label)
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(lambda: self._show_job(session.job))
        self._job = None
        self._draw_soon = OncePerTurn(self._draw_job)
        session.status_changed.connect(self._show_status)
        session.message.connect(self._show_message)
        session.job_changed.connect(self._show_job)

    def text(self) -> str:
        """The status shown."""
        return self.label.text()

    def _show_status(self, text: str) -> None:
        self.label.setStyleSheet("")
        self.label.setText(text)

    def _show_message(self, level: str, text: str) -> None:
        self.label.setText(text)
        self.label.setStyleSheet(_ERROR_STYLE if level in ("error", "warning") else "")

    def _show_job(self, job) -> None:
        """Show ``job`` (None: no job) on the next turn of the event loop (see the docstring)."""
        self._job = job
        self._draw_soon()

    def _draw_job(self) -> None:
        job = self._job
        if job is None:
            self.progress.setVisible(False)
            self._tick.stop()
            return
        if not self._tick.isActive():
            self._tick.start()
        self.progress.setVisible(True)
        self.progress.setRange(0, max(job.total, 0))
        self.progress.setValue(min(job.done, job.total) if job.total else 0)
        eta = job.eta_seconds()
        counts = f" {job.done} / {job.total}" if job.total else ""
        left = f", about {_duration(eta)} left" if eta is not None else ""
        self.progress.setFormat(f"{job.name}: {job.stage}{counts}{left}")
