"""Add layers while the user works: without taking their active layer, in short stalls.

napari makes every new layer the only selected and active one. A prediction, a suggestions
layer or an explorer view appearing in the middle of annotating would then receive the next
click, point or key (an image layer's "2" is a transform mode): the user's layer stays active
(:func:`keeping_focus`).

Adding a layer holds the event loop (napari's layer controls, vispy visual and selection
events: 150-250 ms here), and so does the layer's first draw (vispy compiling its shader:
150-300 ms in software OpenGL). Back to back they froze Predict for over half a second
(``benchmarks/gui_latency.py``). A layer added during a job is therefore added hidden and
shown on a later turn of the event loop (:func:`show_later`): two shorter stalls, with clicks
and repaints handled in between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from qtpy.QtCore import QTimer

__all__ = ["SHOW_AFTER_MS", "keeping_focus", "show_later"]

#: How long after it was added a hidden new layer is shown (:func:`show_later`).
SHOW_AFTER_MS = 30


@contextmanager
def keeping_focus(viewer) -> Iterator[None]:
    """Within the block, new layers may be added; after it, the selection is as before.

    While the block runs, the selection's events are held back: napari selects each new
    layer and the selection is put back before anyone is told, so the layer controls, the
    layer list and the viewer's buttons never switch to the new layer and back (a third of
    the cost of adding a layer here). When the block removed a selected layer, the selection
    did change: it is then put right with its events.
    """
    selection = viewer.layers.selection
    active, selected = selection.active, list(selection)
    unchanged = True
    try:
        with selection.events.blocker_all():
            try:
                yield
            finally:
                layers = viewer.layers
                unchanged = (active is None or active in layers) and \
                    all(layer in layers for layer in selected)
                if unchanged:
                    _select(selection, active, selected)
    finally:
        if not unchanged:
            _select(selection, active, [layer for layer in selected if layer in viewer.layers])


def _select(selection, active, selected: list) -> None:
    """Make ``active`` (when it is still a layer) and ``selected`` the selection."""
    if active is not None and active in selected:
        selection.active = active
        selection.update(selected)
    else:
        selection.clear()
        selection.update(selected)


def show_later(show: Callable[[], None]) -> None:
    """Call ``show`` (which makes a layer added hidden visible) on a later turn of the loop."""
    QTimer.singleShot(SHOW_AFTER_MS, show)
