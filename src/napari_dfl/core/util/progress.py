"""Driving the core's progress generators (extraction, training, prediction) to their end.

Long jobs in the core are generators that yield progress and *return* their result, so the
GUI can run them in a worker and the CLI can print progress. :func:`drive` is the one loop
that runs such a generator headless.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

P = TypeVar("P")
R = TypeVar("R")


def drive(generator: Generator[P, None, R], on_progress: Callable[[P], None] | None = None) -> R:
    """Run a progress generator to the end and return its result (``StopIteration.value``).

    Args:
        generator: the job.
        on_progress: called with every progress item.
    """
    while True:
        try:
            progress = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(progress)
