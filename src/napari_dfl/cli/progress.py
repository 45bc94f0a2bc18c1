"""Progress bars on stderr for the CLI, fed by the workflows' events (tqdm)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """One tqdm bar per stage: an embedding, a prediction, epochs, a cohort's slides.

    Feed it job events (``progress.event(kind, payload)``) or embedding progress
    (``progress.embedding(p)``); bars are closed when the stage changes and by
    :meth:`close`. Disabled, it prints nothing (``--json`` output stays clean).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar = None
        self._stage: tuple | None = None

    def _bar_for(self, stage: tuple, total: int, desc: str, unit: str):
        from tqdm import tqdm  # only when a bar is drawn

        if self._bar is None or stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                             dynamic_ncols=True)
        return self._bar

    def _show(self, stage: tuple, total: int, desc: str, unit: str, done: int) -> None:
        """Move the bar of ``stage`` (a new one when the stage changed) to ``done``."""
        if not self.enabled:
            return
        bar = self._bar_for(stage, total, desc, unit)
        bar.n = done
        bar.refresh()

    def embedding(self, progress: Any) -> None:
        """Show a slide's embedding progress (an ``EmbedProgress``)."""
        self._show(("embed", progress.slide), progress.total, f"embedding {progress.slide}",
                   "sample", progress.done)

    def slides(self, done: int, total: int) -> None:
        """Show how many slides of a cohort are done (a dask run reports whole slides)."""
        self._show(("slides", total), total, "slides embedded", "slide", done)

    def fit(self, progress: Any) -> None:
        """Show a slide model's training: one bar per fit (a fold, or the final model)."""
        self._show(("fit", progress.fold), progress.epochs, f"training {progress.stage}",
                   "epoch", progress.epoch)

    def event(self, kind: str, payload: Any) -> None:
        """Show a job event (see :mod:`napari_dfl.workflows.jobs`)."""
        if not self.enabled:
            return
        if kind == "embedding":
            self.embedding(payload)
        elif kind == "prediction":
            self._bar_for(("predict", id(payload)), len(payload.grid), "predicting", "tile")
            self._predicted = payload
        elif kind == "proba" and self._stage and self._stage[0] == "predict":
            self._show(self._stage, len(self._predicted.grid), "predicting", "tile",
                       int(self._predicted.predicted.sum()))
        elif kind == "epoch":
            self._show(("train",), payload.max_epochs, "training", "epoch", payload.epoch)

    def close(self) -> None:
        """Close the current bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None
