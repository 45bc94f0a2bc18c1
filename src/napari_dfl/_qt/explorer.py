"""The embedding explorer: a second napari window with the slide's tiles in 2-D, linked.

The projection (PCA at once, UMAP in a child process) of the tiles in the slide's store is
drawn as a density image (:class:`napari_dfl.core.explorer.embedding_map.EmbeddingMap`) with the
selection as a second image on top, so 100,000 tiles draw and recolour as fast as a few.
Linked both ways:

* a lasso (or any polygon) drawn on the ``lasso`` layer of the explorer selects those
  tiles; they light up on the slide in the ``DFL selected tiles`` layer;
* a polygon drawn on the slide's ``DFL explore`` layer selects the tiles whose centres it
  holds; they light up in the explorer;
* clicking a point centres the slide on its tile; hovering shows the tile's patch;
* *Label selection* turns the selected tiles into point annotations of the active class.

``DFL embedding colours`` shows the first three principal components of the tile
embeddings as RGB over the slide (one value per tile).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QComboBox, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_dfl._qt.annotation_layers import rgba
from napari_dfl._qt.layer_focus import keeping_focus
from napari_dfl._qt.overlays import tile_placement
from napari_dfl._qt.suggestions import viewer_camera
from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.errors import DFLError
from napari_dfl.core.explorer.colours import label_colors, slide_colors, value_colors
from napari_dfl.core.explorer.embedding_map import EmbeddingMap
from napari_dfl.core.explorer.projection import cached_projection, project_stores
from napari_dfl.core.features.pca_colours import pca_colors
from napari_dfl.core.features.store_folder import sibling_stores, slide_name
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.workflows.explore import projection_job

DENSITY_NAME = "embedding density"
HIGHLIGHT_NAME = "selected"
LASSO_NAME = "lasso"
SLIDE_SELECTION_NAME = "DFL selected tiles"
SLIDE_LASSO_NAME = "DFL explore"
FALSE_COLOUR_NAME = "DFL embedding colours"
COLOR_MODES = ("prediction", "class", "confidence", "slide", "PCA colours")
_HIGHLIGHT = np.array([255, 255, 0, 255], np.uint8)


class Explorer:
    """The explorer of one panel (see the module docstring).

    Args:
        slide_viewer: the panel's viewer (the slide and its layers).
        session: the panel's session.
        slide_layer_of: returns the slide layer (placement of the explorer's slide layers).
        bind_keys: binds the panel's keys (1-9, N, K) on a layer the explorer adds.
        viewer_factory: makes the explorer's window (tests pass their own).

    """

    def __init__(self, slide_viewer, session, slide_layer_of, bind_keys,
                 viewer_factory=None) -> None:
        self.slide_viewer, self.session = slide_viewer, session
        self._slide_layer_of, self._bind_keys = slide_layer_of, bind_keys
        self.viewer_factory = viewer_factory
        self.viewer = None
        self.map: EmbeddingMap | None = None
        self.embeddings: np.ndarray | None = None
        self.selected = np.zeros(0, dtype=bool)
        self.grid_shape = (1, 1)
        self.hovered: int | None = None
        self.controls: ExplorerControls | None = None
        self._slide_paths: list[tuple[str | None, float | None]] = []  # per slide id
        self._other_slides: dict[int, object] = {}
        self._positions = np.zeros((0, 2), np.int64)  # grid (row, col) of every tile
        self._proba_of: tuple = (None, None)  # (head, its probabilities of every tile)

    # -- opening ---------------------------------------------------------------------------
    def open(self, method: str = "pca", cohort: bool = False) -> bool:
        """Project the tiles of the slide's store and show them; False (and a note) if not.

        With ``cohort``, the other slides' stores of the same store folder and extractor are
        projected with it (one shared space, colour by slide). PCA is computed at once; UMAP
        runs in a child process as a job of the panel. Projections are cached with the
        stores, so reopening is instant.
        """
        session = self.session
        try:
            slide = session.working_slide()
        except DFLError as exc:
            session.tell("error", str(exc))
            return False
        settings = session.settings
        store = session.embedder().known_store(slide)
        if store is None or len(store) < 3:
            session.tell("warning", "no embeddings of this slide with these settings yet: "
                         "Extract or Predict first, then open the explorer.")
            return False
        stores = sibling_stores(store) if cohort else [store]
        tile = settings.composition.anchor_extent(slide.require_mpp())
        coords = np.concatenate([s.coords for s in stores])
        ids = np.concatenate([np.full(len(s), i) for i, s in enumerate(stores)])
        names = [slide_name(s) for s in stores]
        embeddings = np.concatenate([s.embeddings() for s in stores])
        self._slide_paths = [(s.attrs.get("slide_path"), s.attrs.get("mpp")) for s in stores]
        self._other_slides = {}

        def show(parts) -> None:
            self.load(EmbeddingMap(np.concatenate(parts), coords, tile, slide_ids=ids,
                                   slides=names), embeddings)

        parts = cached_projection(stores, method)
        if parts is None and method == "pca":
            parts = project_stores(stores, "pca")
        if parts is not None:
            show(parts)
            return True
        paths = [str(s.path) for s in stores]
        return session.start_job("UMAP", lambda cancel: projection_job(paths, method, cancel),
                                 show)

    def load(self, emap: EmbeddingMap, embeddings: np.ndarray | None = None) -> None:
        """Show ``emap`` (and colour it from ``embeddings`` when given)."""
        self.map, self.embeddings = emap, embeddings
        self._positions = emap.tile_grid_positions()
        self._proba_of = (None, None)
        self.selected = np.zeros(len(emap), dtype=bool)
        slide = self.session.slide
        dims = slide.dimensions if slide is not None else \
            tuple(emap.centres.max(axis=0) + emap.tile_size)
        self.grid_shape = (max(1, int(dims[1] // emap.tile_size) + 1),
                           max(1, int(dims[0] // emap.tile_size) + 1))
        self._ensure_viewer()
        self.color_by(self.controls.mode.currentText())
        self._ensure_slide_layers()
        self.select(self.selected)
        viewer_camera(self.viewer).center = (emap.bins / 2, emap.bins / 2)

    def _ensure_viewer(self) -> None:
        if self.is_open and DENSITY_NAME in self.viewer.layers:
            return
        if not self.is_open:
            import napari

            factory = self.viewer_factory or (lambda: napari.Viewer(title="DFL embeddings"))
            self.viewer = factory()
        n = self.map.bins
        blank = np.zeros((n, n, 4), np.uint8)
        self.viewer.add_image(blank, name=DENSITY_NAME, rgb=True)
        self.viewer.add_image(blank, name=HIGHLIGHT_NAME, rgb=True)
        lasso = self.viewer.add_shapes(name=LASSO_NAME, ndim=2, face_color=[1, 1, 0, 0.1],
                                       edge_color="yellow", edge_width=1.5)
        lasso.mode = "add_polygon_lasso"
        lasso.events.data.connect(self._on_lasso)
        self.viewer.mouse_move_callbacks.append(self._on_move)
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        self.controls = ExplorerControls(self)
        self.viewer.window.add_dock_widget(self.controls, name="Explorer", area="right")
        self.viewer.reset_view()

    @property
    def is_open(self) -> bool:
        """Whether the explorer window exists (napari drops its Qt window on close)."""
        return self.viewer is not None and \
            getattr(self.viewer.window, "_qt_window", None) is not None

    def close(self) -> None:
        """Close the explorer window (with the panel); the slide's layers stay."""
        if self.is_open:
            self.viewer.close()
        self.viewer, self.controls = None, None

    def _ensure_slide_layers(self) -> None:
        viewer, reference = self.slide_viewer, self._slide_layer_of()
        placement = tile_placement(self.map.tile_size, reference)
        with keeping_focus(viewer):  # the user keeps drawing where they were
            if SLIDE_SELECTION_NAME in viewer.layers:
                viewer.layers.remove(SLIDE_SELECTION_NAME)
            viewer.add_image(np.zeros((*self.grid_shape, 4), np.uint8),
                             name=SLIDE_SELECTION_NAME, rgb=True, **placement)
            if SLIDE_LASSO_NAME not in viewer.layers:
                extra = {} if reference is None else {"scale": reference.scale[-2:],
                                                      "translate": reference.translate[-2:]}
                lasso = viewer.add_shapes(name=SLIDE_LASSO_NAME, ndim=2,
                                          face_color=[1, 1, 0, 0.1], edge_color="yellow",
                                          edge_width=4, **extra)
                lasso.events.data.connect(self._on_slide_lasso)
        self._bind_keys(viewer.layers[SLIDE_LASSO_NAME])

    # -- colours -------------------------------------------------------------------------
    def colors(self, mode: str) -> np.ndarray:
        """``(N, 3)`` RGB in [0, 1] per tile for a colour mode of :data:`COLOR_MODES`."""
        n, session = len(self.map), self.session
        palette = {k: rgba(v)[:3] for k, v in session.colors.items()}
        proba = self._proba()
        if mode == "prediction" and proba is not None:
            return label_colors(np.asarray(session.head.classes)[proba.argmax(axis=1)], palette)
        if mode == "confidence" and proba is not None:
            return value_colors(proba.max(axis=1))
        if mode == "slide":
            return slide_colors(self.map.slide_ids)
        if mode == "PCA colours" and self.embeddings is not None:
            return pca_colors(self.embeddings) / 255.0
        if mode == "class" and session.samples is not None and len(session.samples):
            index = {tuple(c): lab for c, lab in zip(session.samples.coords.tolist(),
                                                     session.samples.labels.tolist(),
                                                     strict=True)}
            labels = [index.get(tuple(c), "") if here else "" for c, here in
                      zip(self.map.anchors.tolist(), self.map.on_open_slide, strict=True)]
            return label_colors(labels, palette)
        return label_colors([""] * n, palette)

    def _proba(self) -> np.ndarray | None:
        head = self.session.head
        if head is None or self.embeddings is None or self.embeddings.shape[1] != head.input_dim:
            return None
        if self._proba_of[0] is not head:  # once per head, not per recolouring
            self._proba_of = (head, head.predict_proba(self.embeddings))
        return self._proba_of[1]

    def color_by(self, mode: str) -> None:
        """Recolour the density image."""
        self.viewer.layers[DENSITY_NAME].data = self.map.density_rgba(self.colors(mode))

    # -- selection -----------------------------------------------------------------------
    def select(self, mask: np.ndarray) -> int:
        """Select tiles (``(N,)`` bool) in both views; how many are selected."""
        self.selected = np.asarray(mask, dtype=bool)
        n = self.map.bins
        image = np.zeros((n, n, 4), np.uint8)
        image[self.map.highlight_mask(self.selected)] = _HIGHLIGHT
        self.viewer.layers[HIGHLIGHT_NAME].data = image
        grid = np.zeros((*self.grid_shape, 4), np.uint8)
        rows, cols, _ = self._grid_cells(self.selected)
        grid[rows, cols] = _HIGHLIGHT
        slide_layer = self.slide_viewer.layers[SLIDE_SELECTION_NAME]
        slide_layer.data = grid
        count = int(self.selected.sum())
        if self.controls is not None:
            self.controls.info.setText(f"{count} of {len(self.map)} tiles selected.")
        return count

    def _grid_cells(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid ``(rows, cols)`` of the masked tiles of the open slide, and their indices."""
        tiles = np.flatnonzero(np.asarray(mask, dtype=bool) & self.map.on_open_slide)
        positions = self._positions[tiles]
        inside = (positions >= 0).all(axis=1) & (positions < self.grid_shape).all(axis=1)
        return positions[inside, 0], positions[inside, 1], tiles[inside]

    def _on_lasso(self, event) -> None:
        if getattr(event, "action", "added") != "added" or not len(event.source.data):
            return
        self.select(self.map.in_polygon(event.source.data[-1][:, -2:]))

    def _on_slide_lasso(self, event) -> None:
        if self.map is None or getattr(event, "action", "added") != "added" or \
                not len(event.source.data):
            return
        inside = self.map.tiles_in_polygon(event.source.data[-1][:, -2:][:, ::-1])
        self.select(inside & self.map.on_open_slide)

    def label_selection(self) -> int:
        """Make the selected tiles point annotations of the active class; how many."""
        from shapely.geometry import Point

        session = self.session
        name = session.active
        if not name:
            session.tell("warning", "add a class first: the selection is labelled with the "
                         "active class (keys 1-9 pick it).")
            return 0
        centres = self.map.centres[self.selected & self.map.on_open_slide]
        elsewhere = int((self.selected & ~self.map.on_open_slide).sum())
        if elsewhere:
            session.tell("info", f"{elsewhere} selected tiles belong to other slides and were "
                         "not labelled: open those slides to label their tiles.")
        if not len(centres):
            session.tell("info", "nothing selected on this slide: draw a lasso around points "
                         "first.")
            return 0
        session.add_annotations([Annotation(Point(float(x), float(y)), name)
                                 for x, y in centres])
        session.tell("info", f"{len(centres)} tiles labelled {name}.")
        return len(centres)

    # -- pointer -------------------------------------------------------------------------
    def point_at(self, position) -> int | None:
        """The tile under an explorer world position ``(row, col)``, or None."""
        return None if self.map is None else self.map.nearest(position[-2:])

    def centre_slide_on(self, index: int) -> None:
        """Centre the slide's view on tile ``index`` and select it alone."""
        mask = np.zeros(len(self.map), dtype=bool)
        mask[index] = True
        if not self.map.on_open_slide[index]:
            self.select(mask)
            self.session.tell("info", f"this tile is on "
                              f"{self.map.slides[self.map.slide_ids[index]]}: open that slide "
                              "to see it in place.")
            return
        x, y = self.map.centres[index]
        reference = self._slide_layer_of()
        world = np.array([y, x]) if reference is None else \
            np.array([y, x]) * np.asarray(reference.scale[-2:]) + reference.translate[-2:]
        viewer_camera(self.slide_viewer).center = tuple(world.tolist())
        self.select(mask)

    def patch(self, index: int) -> np.ndarray | None:
        """The tile's first patch (RGB) as the backbone saw it, or None without a slide."""
        try:
            slide = self.session.working_slide()
        except DFLError:  # no slide or mpp: nothing to show
            return None
        comp = self.session.settings.composition
        slide_id = int(self.map.slide_ids[index])
        if slide_id:
            slide = self._other_slide(slide_id)
            if slide is None:
                return None
        x, y = self.map.anchors[index]
        return slide.read_region((float(x), float(y)), (comp.patch_size, comp.patch_size),
                                 mpp=comp.zooms[0])

    def _other_slide(self, slide_id: int):
        """Another slide of the cohort view, opened lazily (None when it cannot be read)."""
        cache = self._other_slides
        if slide_id not in cache:
            path, mpp = self._slide_paths[slide_id]
            try:
                cache[slide_id] = open_slide(path, mpp=mpp) if path else None
            except DFLError:
                cache[slide_id] = None
        return cache[slide_id]

    def _on_move(self, _viewer, event) -> None:
        index = self.point_at(event.position)
        if index == self.hovered:
            return
        self.hovered = index
        if index is not None and self.controls is not None:
            self.controls.show_patch(self.patch(index), index)

    def _on_click(self, viewer, event):
        lasso = viewer.layers[LASSO_NAME] if LASSO_NAME in viewer.layers else None  # noqa: SIM401
        if lasso is not None and viewer.layers.selection.active is lasso and \
                lasso.mode != "pan_zoom":
            return
        start = np.asarray(event.position)
        yield
        while event.type == "mouse_move":
            yield
        if np.hypot(*(np.asarray(event.position) - start)[-2:]) < 2:
            index = self.point_at(event.position)
            if index is not None:
                self.centre_slide_on(index)

    # -- false colours -------------------------------------------------------------------
    def false_colour_layer(self):
        """Show the tiles' first three principal components as RGB over the slide."""
        if self.embeddings is None:
            return None
        rgb = pca_colors(self.embeddings)  # over every slide shown: comparable colours
        image = np.zeros((*self.grid_shape, 4), np.uint8)
        rows, cols, tiles = self._grid_cells(np.ones(len(self.map), dtype=bool))
        image[rows, cols, :3] = rgb[tiles]
        image[rows, cols, 3] = 255
        viewer = self.slide_viewer
        if FALSE_COLOUR_NAME in viewer.layers:
            viewer.layers.remove(FALSE_COLOUR_NAME)
        with keeping_focus(viewer):
            layer = viewer.add_image(image, name=FALSE_COLOUR_NAME, rgb=True, opacity=0.6,
                                     **tile_placement(self.map.tile_size,
                                                      self._slide_layer_of()))
        return layer


class ExplorerControls(QWidget):
    """The explorer window's dock: colour mode, labelling, the hovered patch."""

    def __init__(self, explorer: Explorer) -> None:
        super().__init__()
        self.explorer = explorer
        self.mode = QComboBox()
        self.mode.addItems(COLOR_MODES)
        self.mode.currentTextChanged.connect(explorer.color_by)
        self.label_button = QPushButton("Label selection with the active class")
        self.label_button.clicked.connect(explorer.label_selection)
        self.colours_button = QPushButton("Show embedding colours on the slide")
        self.colours_button.clicked.connect(explorer.false_colour_layer)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.patch_view = QLabel("Hover a point to see its patch.")
        self.patch_view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.patch_view.setMinimumSize(160, 160)
        layout = QVBoxLayout(self)
        for widget in (QLabel("colour by"), self.mode, self.label_button, self.colours_button,
                       self.info, self.patch_view):
            layout.addWidget(widget)
        layout.addStretch(1)

    def show_patch(self, patch: np.ndarray | None, index: int) -> None:
        """Show a tile's patch (or a note when it cannot be read)."""
        if patch is None:
            self.patch_view.setText(f"tile {index}")
            return
        patch = np.ascontiguousarray(patch[..., :3], dtype=np.uint8)
        h, w = patch.shape[:2]
        image = QImage(patch.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.patch_view.setPixmap(QPixmap.fromImage(image).scaled(
            160, 160, Qt.AspectRatioMode.KeepAspectRatio))
