"""The "DFL suggestions" layer: where to label next, and the keys to walk through it.

After each prediction the tiles the head is least sure of
(:func:`napari_dfl.core.heads.suggest.suggest_tiles`, annotated tiles skipped) are shown as
square outlines the size of a tile. ``N`` centres the view on the next suggestion,
``Shift-N`` on the previous one, ``K`` labels the current one with the active class (a point
annotation at the tile's centre, which trains like any other) and moves on.
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import Point

from napari_dfl._qt.layer_focus import keeping_focus, show_later
from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.heads.suggest import annotated_tiles, margins, suggest_tiles
from napari_dfl.core.heads.tile_prediction import TilePrediction

__all__ = ["MIN_SCREEN_PX", "SUGGESTIONS_NAME", "Suggestions", "viewer_camera"]

SUGGESTIONS_NAME = "DFL suggestions"
#: A suggested tile is shown at least this many screen pixels wide when jumped to.
MIN_SCREEN_PX = 160.0


def viewer_camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


class Suggestions:
    """The suggestions layer of a panel's viewer and the position in it."""

    def __init__(self, viewer, session, reference_of, count: int = 20) -> None:
        self.viewer, self.session = viewer, session
        self._reference_of = reference_of
        self.count = count
        self.reference = None
        self.centres = np.zeros((0, 2))  # level-0 (x, y)
        self.position = -1
        self.layer = None
        session.prediction_finished.connect(self.refresh)

    def disconnect(self) -> None:
        """Stop following the session."""
        self.session.prediction_finished.disconnect(self.refresh)

    # -- what the panel calls --------------------------------------------------------------
    def refresh(self, prediction: TilePrediction | None = None) -> int:
        """Suggest the least certain unannotated tiles of the prediction; how many."""
        prediction = prediction or self.session.prediction
        if prediction is None:
            return 0
        exclude = annotated_tiles(prediction.grid, self.session.annotations)
        self.reference = self._reference_of()
        self.show(prediction, suggest_tiles(prediction, self.count, exclude))
        return len(self)

    def go(self, direction: int = 1) -> tuple[float, float] | None:
        """Key ``N``/``Shift-N``: centre the view on the next/previous suggestion."""
        if not len(self):
            self.session.say("No suggestions: Predict first (or every tile is labelled).")
            return None
        centre = self.step(direction)
        self.session.say(f"Suggestion {self.position + 1} / {len(self)}: press K to label it "
                         f"{self.session.active or '(add a class first)'}, N for the next.")
        return centre

    def label(self) -> bool:
        """Key ``K``: label the current suggestion with the active class, go to the next."""
        name = self.session.active
        if not name:
            self.session.tell("warning", "add a class first: a suggestion is labelled with "
                              "the active class (keys 1-9 pick it).")
            return False
        centre = self.pop_current()
        if centre is None:
            self.session.say("Press N to go to a suggestion first.")
            return False
        self.session.add_annotations([Annotation(Point(*centre), name)])
        self.go(1)
        return True

    # -- the layer -------------------------------------------------------------------------
    def show(self, prediction: TilePrediction, indices: np.ndarray) -> None:
        """Replace the suggestions by the tiles ``indices`` of ``prediction``."""
        grid = prediction.grid
        self.centres = grid.centers()[indices]
        self.position = -1
        rows_cols = self.centres[:, ::-1]
        features = {"margin": margins(prediction.proba[indices]) if len(indices) else
                    np.zeros(0)}
        if self.layer is None or self.layer not in self.viewer.layers:
            placement = {} if self.reference is None else {
                "scale": tuple(self.reference.scale[-2:]),
                "translate": tuple(self.reference.translate[-2:])}
            with keeping_focus(self.viewer):  # the user keeps drawing where they were
                self.layer = self.viewer.add_points(
                    rows_cols, name=SUGGESTIONS_NAME, symbol="square", size=grid.tile_size,
                    face_color="transparent", border_color="yellow", border_width=0.06,
                    features=features, visible=False, **placement)
            self.layer.editable = False
            show_later(self._reveal)
        else:
            self.layer.data = rows_cols
            self.layer.features = features
            self.layer.size = grid.tile_size

    def _reveal(self) -> None:
        """Show the layer added hidden on an earlier turn of the event loop."""
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.visible = True

    def __len__(self) -> int:
        return len(self.centres)

    @property
    def current(self) -> tuple[float, float] | None:
        """Level-0 ``(x, y)`` centre of the suggestion the view was last moved to."""
        if not 0 <= self.position < len(self.centres):
            return None
        x, y = self.centres[self.position]
        return float(x), float(y)

    def step(self, direction: int = 1) -> tuple[float, float] | None:
        """Centre the view on the next (``1``) or previous (``-1``) suggestion; its centre."""
        if not len(self.centres):
            return None
        self.position = (self.position + direction) % len(self.centres)
        self._centre_on(*self.centres[self.position])
        return self.current

    def pop_current(self) -> tuple[float, float] | None:
        """Remove the current suggestion (it was labelled); its centre, or None."""
        centre = self.current
        if centre is None:
            return None
        self.centres = np.delete(self.centres, self.position, axis=0)
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.data = self.centres[:, ::-1]
        self.position -= 1  # the next step lands on the suggestion that followed it
        return centre

    def _centre_on(self, x: float, y: float) -> None:
        world = np.array([y, x], dtype=float)
        if self.reference is not None:
            world = world * np.asarray(self.reference.scale[-2:]) + \
                np.asarray(self.reference.translate[-2:])
        camera = viewer_camera(self.viewer)
        camera.center = tuple(world.tolist())
        tile = self.layer.size.max() if self.layer is not None and len(self.layer.size) else 1
        scale = 1.0 if self.reference is None else float(self.reference.scale[-1])
        if tile * scale * camera.zoom < MIN_SCREEN_PX:
            camera.zoom = MIN_SCREEN_PX / (tile * scale)
