"""Jobs: generators shared by the CLI, the panel and dask, and how they are driven.

A long job is a generator. It yields ``(kind, payload)`` *events* as it goes and returns
its result; it raises :class:`~napari_dfl.core.errors.Cancelled` when its cancel check
turns true and a :class:`~napari_dfl.core.errors.DFLError` (whose text says what to do) when
it cannot go on. The same generator runs headless under :func:`run` (the CLI, scripts,
tests), in a napari ``thread_worker`` (the panel), or in a dask task.

Event kinds, and their payloads:

* ``"samples"``: the :class:`~napari_dfl.core.annotations.samples.SampleSet` of the labels;
* ``"embedding"``: an :class:`~napari_dfl.core.features.engine.EmbedProgress`;
* ``"epoch"``: a :class:`~napari_dfl.core.heads.config.TrainProgress`;
* ``"trained"``: the new :class:`~napari_dfl.core.heads.model.TrainedHead` (auto mode);
* ``"prediction"``: the :class:`~napari_dfl.core.heads.tile_prediction.TilePrediction`
  being filled in, once when it starts;
* ``"proba"``: ``(coords, proba)`` of tiles just predicted;
* ``"waiting"``: seconds spent waiting on a child process.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from napari_dfl.core.util.progress import drive

__all__ = ["Event", "Job", "as_events", "run"]

#: One event of a job: its kind and payload (see the module docstring).
Event = tuple[str, Any]
R = TypeVar("R")
#: A job: a generator of events returning its result.
Job = Generator[Event, None, R]


def run(job: Generator[Event, None, R], on_event: Callable[[str, Any], None] | None = None) -> R:
    """Drive a job to its end in this thread; ``on_event(kind, payload)`` sees every event."""
    return drive(job, None if on_event is None else lambda event: on_event(*event))


def as_events(kind: str, progress: Generator[Any, None, R]) -> Generator[Event, None, R]:
    """Turn a core progress generator into ``(kind, item)`` events; return its result.

    Closing the job closes the inner generator too (it stops between batches or epochs).
    """
    try:
        while True:
            try:
                item = next(progress)
            except StopIteration as stop:
                return stop.value
            yield kind, item
    finally:
        progress.close()
