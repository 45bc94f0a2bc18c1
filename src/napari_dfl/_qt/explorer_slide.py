"""The explorer's layers on the slide's viewer: selection outlines, regions, false colours.

At most three layers, each made once and reused (new data, new placement) when the
explorer opens again, switches projection or shows another slide:

* ``DFL selected tiles``: the selected tiles as yellow outlines
  (:func:`napari_dfl.core.explorer.outlines.outline_image`), the tissue visible inside;
* ``DFL explore``: the shapes layer on which a region selects the tiles it holds;
* ``DFL embedding colours`` (on request): each tile in its false colour.

Layers are added with :func:`napari_dfl._qt.layer_focus.keeping_focus`, so the user's
active layer stays active.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from napari_dfl._qt.layer_focus import keeping_focus
from napari_dfl._qt.overlays import tile_placement
from napari_dfl.core.explorer.outlines import cell_size, outline_image

__all__ = ["FALSE_COLOUR_NAME", "OUTLINE_RGBA", "SLIDE_LASSO_NAME", "SLIDE_SELECTION_NAME",
           "SlideLayers"]

SLIDE_SELECTION_NAME = "DFL selected tiles"
SLIDE_LASSO_NAME = "DFL explore"
FALSE_COLOUR_NAME = "DFL embedding colours"
#: Colour of the outlines (opaque yellow; the inside of a tile is fully transparent).
OUTLINE_RGBA = (1.0, 1.0, 0.0, 1.0)


def _outline_colormap():
    from napari.utils.colormaps import Colormap

    return Colormap([[0.0, 0.0, 0.0, 0.0], list(OUTLINE_RGBA)], name="DFL selection outline")


class SlideLayers:
    """The explorer's layers of one slide viewer (see the module docstring).

    Args:
        viewer: the slide's viewer.
        slide_layer_of: returns the slide layer (the layers are placed over it), or None.
        bind_keys: binds the panel's keys on a layer the explorer adds.
        on_region: called with each data event of the ``DFL explore`` layer.

    """

    def __init__(self, viewer, slide_layer_of: Callable, bind_keys: Callable,
                 on_region: Callable) -> None:
        self.viewer = viewer
        self._slide_layer_of, self._bind_keys, self._on_region = (slide_layer_of, bind_keys,
                                                                   on_region)
        self.tile_size = 1.0
        self.grid_shape = (1, 1)
        self.cell = 1

    def _layer(self, name: str):
        layers = self.viewer.layers
        return layers[name] if name in layers else None  # noqa: SIM401 (no .get)

    @property
    def selection_layer(self):
        """The ``DFL selected tiles`` layer, or None."""
        return self._layer(SLIDE_SELECTION_NAME)

    @property
    def region_layer(self):
        """The ``DFL explore`` layer, or None."""
        return self._layer(SLIDE_LASSO_NAME)

    def place(self, tile_size: float, grid_shape: tuple[int, int]) -> None:
        """Make (or reuse and move) the selection and region layers for a tile grid.

        The selection is emptied and any region drawn before is removed.
        """
        self.tile_size, self.grid_shape = float(tile_size), tuple(grid_shape)
        self.cell = cell_size(self.grid_shape)
        reference = self._slide_layer_of()
        empty = np.zeros((self.grid_shape[0] * self.cell, self.grid_shape[1] * self.cell),
                         np.uint8)
        placement = tile_placement(self.tile_size / self.cell, reference)
        base = {} if reference is None else {"scale": tuple(reference.scale[-2:]),
                                             "translate": tuple(reference.translate[-2:])}
        with keeping_focus(self.viewer):  # the user keeps drawing where they were
            layer = self.selection_layer
            if layer is None:
                layer = self.viewer.add_image(empty, name=SLIDE_SELECTION_NAME,
                                              colormap=_outline_colormap(),
                                              contrast_limits=(0, 1), blending="translucent",
                                              **placement)
                layer.editable = False
            else:
                self._set_image(layer, empty, placement)
            region = self.region_layer
            if region is None:
                region = self.viewer.add_shapes(name=SLIDE_LASSO_NAME, ndim=2,
                                                face_color=[1, 1, 0, 0.1], edge_color="yellow",
                                                edge_width=4, **base)
                region.events.data.connect(self._on_region)
            else:
                self.clear_region()
                for attribute, value in base.items():
                    setattr(region, attribute, value)
        self._bind_keys(region)

    @staticmethod
    def _set_image(layer, data: np.ndarray, placement: dict) -> None:
        layer.data = data
        layer.scale, layer.translate = placement["scale"], placement["translate"]
        if data.ndim == 2 and tuple(layer.contrast_limits) != (0, 1):
            layer.contrast_limits = (0, 1)

    def show_selection(self, rows: np.ndarray, cols: np.ndarray) -> None:
        """Outline the tiles at grid ``(rows, cols)`` (all others cleared)."""
        layer = self.selection_layer
        if layer is None:  # the user deleted it: make it again
            self.place(self.tile_size, self.grid_shape)
            layer = self.selection_layer
        layer.data = outline_image(rows, cols, self.grid_shape, self.cell)

    def clear_region(self) -> None:
        """Remove the regions drawn on ``DFL explore`` (they selected what is now stale)."""
        region = self.region_layer
        if region is not None and len(region.data):
            region.data = []

    def show_false_colours(self, rows: np.ndarray, cols: np.ndarray, rgb: np.ndarray):
        """Paint tiles at grid ``(rows, cols)`` with ``(n, 3)`` uint8 colours; the layer."""
        image = np.zeros((*self.grid_shape, 4), np.uint8)
        image[rows, cols, :3] = rgb
        image[rows, cols, 3] = 255
        placement = tile_placement(self.tile_size, self._slide_layer_of())
        layer = self._layer(FALSE_COLOUR_NAME)
        if layer is None:
            with keeping_focus(self.viewer):
                layer = self.viewer.add_image(image, name=FALSE_COLOUR_NAME, rgb=True,
                                              opacity=0.6, **placement)
        else:
            self._set_image(layer, image, placement)
            layer.visible = True
        return layer
