"""Add layers without taking the user's active layer or selection.

napari makes every new layer the only selected and active one. A prediction, a suggestions
layer or an explorer view appearing in the middle of annotating would then receive the next
click, point or key (an image layer's "2" is a transform mode): the user's layer stays active.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["keeping_focus"]


@contextmanager
def keeping_focus(viewer) -> Iterator[None]:
    """Within the block, new layers may be added; after it, the selection is as before."""
    selection = viewer.layers.selection
    active, selected = selection.active, list(selection)
    try:
        yield
    finally:
        kept = [layer for layer in selected if layer in viewer.layers]
        if active is not None and active in viewer.layers:
            selection.active = active
            selection.update(kept)
        else:
            selection.clear()
            selection.update(kept)
