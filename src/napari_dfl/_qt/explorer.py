"""The embedding explorer: a second napari window with the slide's tiles in 2-D, linked.

The projection (PCA at once, UMAP in a child process) of the tiles in the slide's store is
drawn as a density image (:class:`napari_dfl.core.explorer.embedding_map.EmbeddingMap`) with the
selection as a second image on top, so 100,000 tiles draw and recolour as fast as a few.
The window's title and canvas say what is shown (method, tiles, slide, colouring); the
axes are labelled with the method (``PCA 1``/``PCA 2``, ``UMAP 1``/``UMAP 2``), the
second one pointing up. Linked both ways:

* a lasso (or any polygon) drawn on the ``lasso`` layer of the explorer selects those
  tiles; they are outlined on the slide in the ``DFL selected tiles`` layer;
* a polygon drawn on the slide's ``DFL explore`` layer selects the tiles whose centres it
  holds; they light up in the explorer;
* a row of the legend (a class, a slide, a cluster...) selects its tiles;
* clicking a point centres the slide on its tile; hovering shows the tile's patch;
* the dock's gallery shows example patches of the selection;
* *Label selection* (or a cluster's *Label*) turns tiles into point annotations of the
  active class.

Colour by prediction, class, confidence, slide, cluster (seeded k-means,
:mod:`napari_dfl.core.explorer.clusters`) or PCA colours; whatever may take long on
100,000 tiles (clusters, false colours, the head's probabilities, reading patches) runs in
a thread (:mod:`napari_dfl._qt.explorer_background`) and is kept for the tiles shown.
``DFL embedding colours`` shows the tiles' false colours over the slide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_dfl._qt import explorer_window as window
from napari_dfl._qt.annotation_layers import rgba
from napari_dfl._qt.explorer_background import Background
from napari_dfl._qt.explorer_controls import CLUSTER_MODE, COLOR_MODES, ExplorerControls
from napari_dfl._qt.explorer_slide import (
    FALSE_COLOUR_NAME,
    SLIDE_LASSO_NAME,
    SLIDE_SELECTION_NAME,
    SlideLayers,
)
from napari_dfl._qt.suggestions import viewer_camera
from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.errors import DFLError
from napari_dfl.core.explorer.clusters import DEFAULT_K, cluster_names, fingerprint, shared_cache
from napari_dfl.core.explorer.colours import qualitative, slide_colors
from napari_dfl.core.explorer.embedding_map import EmbeddingMap
from napari_dfl.core.explorer.gallery import GALLERY_SIZE, example_tiles, thumbnail
from napari_dfl.core.explorer.legend import (
    Colouring,
    categorical,
    continuous,
    false_colours,
    from_labels,
)
from napari_dfl.core.explorer.projection import cached_projection, project_stores
from napari_dfl.core.features.pca_colours import pca_colors
from napari_dfl.core.features.store_folder import sibling_stores, slide_name
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.workflows.explore import projection_job

__all__ = ["CLUSTER_MODE", "COLOR_MODES", "DENSITY_NAME", "FALSE_COLOUR_NAME",
           "HIGHLIGHT_NAME", "LASSO_NAME", "SLIDE_LASSO_NAME", "SLIDE_SELECTION_NAME",
           "Explorer", "ExplorerControls"]

DENSITY_NAME = "embedding density"
HIGHLIGHT_NAME = "selected"
LASSO_NAME = "lasso"
_HIGHLIGHT = np.array([255, 255, 0, 255], np.uint8)
_SELECTED_BY = {"lasso": "the lasso", "slide": "the region on the slide",
                "click": "the clicked tile"}


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
        self._slide_layer_of = slide_layer_of
        self.viewer_factory = viewer_factory
        self.viewer = None
        self.map: EmbeddingMap | None = None
        self.embeddings: np.ndarray | None = None
        self.method = "pca"
        self.k = DEFAULT_K
        self.colouring: Colouring | None = None
        self.selected = np.zeros(0, dtype=bool)
        self.selection_name = ""  # what the selection is ("cluster 3", "the lasso")
        self.grid_shape = (1, 1)
        self.hovered: int | None = None
        self.controls: ExplorerControls | None = None
        self.slide_layers = SlideLayers(slide_viewer, slide_layer_of, bind_keys,
                                        self._on_slide_lasso)
        self.tasks = Background(on_error=self._on_task_error)
        self._derived: dict[object, object] = {}  # slow results for the tiles shown
        self._waiting: dict[object, list[Callable]] = {}
        self._key = ""  # fingerprint of the embeddings shown
        self._proba_head = None  # the head whose probabilities _derived holds
        self._gallery_request = 0
        self._slide_paths: list[tuple[str | None, float | None]] = []  # per slide id
        self._other_slides: dict[int, object] = {}
        self._slides_lock = threading.Lock()
        self._positions = np.zeros((0, 2), np.int64)  # grid (row, col) of every tile
        session.active_class_changed.connect(self._on_active_class)

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
        slide_paths = [(s.attrs.get("slide_path"), s.attrs.get("mpp")) for s in stores]

        def show(parts) -> None:
            self._slide_paths = slide_paths
            with self._slides_lock:
                self._other_slides = {}
            self.load(EmbeddingMap(np.concatenate(parts), coords, tile, slide_ids=ids,
                                   slides=names), embeddings, method)

        parts = cached_projection(stores, method)
        if parts is None and method == "pca":
            parts = project_stores(stores, "pca")
        if parts is not None:
            show(parts)
            return True
        paths = [str(s.path) for s in stores]
        return session.start_job("UMAP", lambda cancel: projection_job(paths, method, cancel),
                                 show)

    def load(self, emap: EmbeddingMap, embeddings: np.ndarray | None = None,
             method: str = "pca") -> None:
        """Show ``emap``, a ``method`` projection (coloured from ``embeddings`` when given).

        Whatever was selected or drawn for the previous projection is cleared.
        """
        self.map, self.embeddings, self.method = emap, embeddings, method
        self.colouring = None  # the previous tiles' colours
        self._positions = emap.tile_grid_positions()
        self.tasks.forget()
        self._derived, self._waiting = {}, {}
        self._key = fingerprint(embeddings) if embeddings is not None else ""
        slide = self.session.slide
        dims = slide.dimensions if slide is not None else \
            tuple(emap.centres.max(axis=0) + emap.tile_size)
        self.grid_shape = (max(1, int(dims[1] // emap.tile_size) + 1),
                           max(1, int(dims[0] // emap.tile_size) + 1))
        self._ensure_viewer()
        self._clear_lasso()
        self.slide_layers.place(emap.tile_size, self.grid_shape)
        self.color_by(self.controls.mode.currentText())
        self.select(np.zeros(len(emap), dtype=bool), source="load")
        self.viewer.reset_view()

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
        window.dress(self.viewer)
        self.controls = ExplorerControls(self)
        self.controls.set_active_class(self.session.active)
        self.viewer.window.add_dock_widget(self.controls, name="Explorer", area="right")

    @property
    def is_open(self) -> bool:
        """Whether the explorer window exists (napari drops its Qt window on close)."""
        return self.viewer is not None and \
            getattr(self.viewer.window, "_qt_window", None) is not None

    def close(self) -> None:
        """Close the explorer window (with the panel); the slide's layers stay."""
        self.tasks.forget()
        if self.is_open:
            self.viewer.close()
        self.viewer, self.controls = None, None

    @property
    def busy(self) -> bool:
        """Whether something is being computed or read in the background."""
        return self.tasks.busy

    # -- what the window says ------------------------------------------------------------
    @property
    def subject(self) -> str:
        """``"PCA of 1,234 tiles of CMU-1-Small-Region"``: what the window shows."""
        slides = self.map.slides if self.map is not None else []
        where = Path(slides[0]).stem if len(slides) == 1 else f"{len(slides)} slides"
        count = len(self.map) if self.map is not None else 0
        return f"{self.method.upper()} of {count:,} tiles of {where}"

    @property
    def title(self) -> str:
        """The window's title: ``"DFL embeddings: PCA of 1,234 tiles of ..."``."""
        return f"DFL embeddings: {self.subject}"

    @property
    def axis_labels(self) -> tuple[str, str]:
        """``("PCA 2", "PCA 1")``: the labels of the rows (up) and columns (right)."""
        method = self.method.upper()
        return f"{method} 2", f"{method} 1"

    def _label_window(self) -> None:
        colouring = self.colouring
        current = colouring is not None and len(colouring) == len(self.map)
        shown = f"\ncoloured by {colouring.title}" if current else ""
        window.label(self.viewer, self.title, self.subject + shown, self.axis_labels)

    # -- colours -------------------------------------------------------------------------
    @property
    def shown_mode(self) -> str | None:
        """The colouring chosen in the open window; None once the user closed it."""
        if not self.is_open or self.controls is None:
            return None
        return self.controls.mode.currentText()

    def set_k(self, k: int) -> None:
        """Use ``k`` clusters (recolours when colouring by cluster)."""
        self.k = int(k)
        if self.shown_mode == CLUSTER_MODE:
            self.color_by(CLUSTER_MODE)

    def colouring_of(self, mode: str) -> Colouring | None:
        """The colouring of a mode of :data:`COLOR_MODES`; None while it is being computed.

        The computation then runs in the background and the window is recoloured when it
        ends (if that mode is still chosen).
        """
        def recolour(_value) -> None:
            if self.shown_mode == mode:
                self.color_by(mode)

        n, session = len(self.map), self.session
        palette = {k: rgba(v)[:3] for k, v in session.colors.items()}
        if mode in ("prediction", "confidence"):
            head = session.head
            if head is None or self.embeddings is None or \
                    self.embeddings.shape[1] != head.input_dim:
                return from_labels(mode, [""] * n, {}, missing="no prediction",
                                   note="Train a head to colour the tiles by its prediction.")
            if self._proba_head is not head:  # a new head: earlier probabilities are stale
                self._proba_head = head
                for key in [k for k in self._derived if isinstance(k, tuple) and
                            k[0] == "proba"]:
                    del self._derived[key]
            embeddings = self.embeddings
            proba = self._derive(("proba", id(head)),
                                 lambda: head.predict_proba(embeddings), recolour)
            if proba is None:
                return None
            if mode == "confidence":
                chance = 1.0 / max(1, proba.shape[1])
                return continuous("confidence", proba.max(axis=1), domain=(chance, 1.0),
                                  note="the head's highest probability (from chance to 1)")
            classes = [str(c) for c in head.classes]
            rgb = [palette.get(c, (0.55, 0.55, 0.55)) for c in classes]
            return categorical("prediction", proba.argmax(axis=1), classes, rgb)
        if mode == "slide":
            names = [Path(name).stem for name in self.map.slides]
            return categorical("slide", self.map.slide_ids, names,
                               slide_colors(np.arange(len(names))))
        if mode == CLUSTER_MODE:
            return self._cluster_colouring(recolour)
        if mode == "PCA colours":
            if self.embeddings is None:
                return from_labels(mode, [""] * n, {}, missing="no embeddings")
            rgb = self._derive("pca colours", lambda: pca_colors(self.embeddings), recolour)
            return None if rgb is None else false_colours(
                "PCA colours", rgb, note="red, green, blue: the first three principal "
                "components of the embeddings (as on the slide)")
        labels = [""] * n
        if mode == "class" and session.samples is not None and len(session.samples):
            index = {tuple(c): lab for c, lab in zip(session.samples.coords.tolist(),
                                                     session.samples.labels.tolist(),
                                                     strict=True)}
            labels = [index.get(tuple(c), "") if here else "" for c, here in
                      zip(self.map.anchors.tolist(), self.map.on_open_slide, strict=True)]
        return from_labels("class", labels, palette, missing="no class")

    def _cluster_colouring(self, recolour: Callable) -> Colouring | None:
        n, k = len(self.map), self.k
        if self.embeddings is None or n < k:
            return from_labels(CLUSTER_MODE, [""] * n, {}, missing="no clusters",
                               note=f"clusters need the embeddings of at least {k} tiles.")
        cache, key, embeddings = shared_cache(), self._key, self.embeddings
        labels = cache.get(key, k)  # cached for these tiles: no thread needed
        if labels is None:
            labels = self._derive(("clusters", k),
                                  lambda: cache.labels(embeddings, k, key=key), recolour)
        if labels is None:
            return None
        return categorical(f"cluster (k-means, k = {k})", labels, cluster_names(k),
                           qualitative(k), note="clusters numbered from the largest")

    def _pending_text(self, mode: str) -> str:
        n = len(self.map)
        if mode == CLUSTER_MODE:
            return f"Finding {self.k} clusters among {n:,} tiles..."
        if mode == "PCA colours":
            return f"Computing the principal components of {n:,} tiles..."
        return f"Predicting {n:,} tiles with the head..."

    def _derive(self, key: object, compute: Callable, then: Callable | None = None):
        """A slow result for the tiles shown: at once if known, else None (computing it).

        ``then(result)`` is called on the GUI thread once it is known.
        """
        if key in self._derived:
            return self._derived[key]
        if then is not None:
            self._waiting.setdefault(key, []).append(then)

        def done(value) -> None:
            self._derived[key] = value
            for callback in self._waiting.pop(key, []):
                callback(value)

        self.tasks.run(key, compute, done)
        return None

    def _on_task_error(self, key: str, exc: Exception) -> None:
        self.session.tell("error", f"the explorer could not compute {key}: {exc}")

    def colors(self, mode: str) -> np.ndarray | None:
        """``(N, 3)`` RGB in [0, 1] per tile for a mode of :data:`COLOR_MODES` (None: pending)."""
        colouring = self.colouring_of(mode)
        return None if colouring is None else colouring.colors

    def color_by(self, mode: str) -> None:
        """Recolour the density image and show the legend of ``mode``."""
        if self.map is None or self.shown_mode is None:
            return
        colouring = self.colouring_of(mode)
        if colouring is None:
            self.controls.legend.show_text(self._pending_text(mode))
            self._label_window()
            return
        self.colouring = colouring
        self.viewer.layers[DENSITY_NAME].data = self.map.density_rgba(colouring.colors)
        self.controls.legend.show_colouring(colouring, labellable=mode == CLUSTER_MODE)
        self._label_window()

    def show_clusters(self, k: int = DEFAULT_K, timeout: float = 600.0) -> Colouring | None:
        """Colour by ``k`` clusters and pick the largest, its examples in the gallery.

        Waits (processing Qt events) until the clusters and the examples are ready: for
        scripts such as the screenshots. Returns the cluster colouring (None on timeout).
        """
        self.controls.k_spin.setValue(int(k))
        self.controls.mode.setCurrentText(CLUSTER_MODE)
        self.color_by(CLUSTER_MODE)
        if not self.tasks.wait(timeout) or self.colouring is None or \
                not self.colouring.entries:
            return None
        self.pick(self.colouring.entries[0].code)
        self.tasks.wait(timeout)
        self.viewer.reset_view()
        return self.colouring

    # -- selection -----------------------------------------------------------------------
    def select(self, mask: np.ndarray, source: str = "", name: str = "") -> int:
        """Select tiles (``(N,)`` bool) in both views; how many are selected.

        Args:
            mask: the tiles to select.
            source: ``"lasso"`` (the explorer's lasso), ``"slide"`` (a region on the
                slide) or anything else; the shapes of the other tools are cleared.
            name: what the selection is, for the captions ("cluster 3").

        """
        self.selected = np.asarray(mask, dtype=bool)
        self.selection_name = name or _SELECTED_BY.get(source, "the selection")
        n = self.map.bins
        image = np.zeros((n, n, 4), np.uint8)
        image[self.map.highlight_mask(self.selected)] = _HIGHLIGHT
        self.viewer.layers[HIGHLIGHT_NAME].data = image
        rows, cols, _ = self._grid_cells(self.selected)
        self.slide_layers.show_selection(rows, cols)
        if source != "lasso":
            self._clear_lasso()
        if source != "slide":
            self.slide_layers.clear_region()
        count = int(self.selected.sum())
        if self.shown_mode is not None:
            of = f" ({self.selection_name})" if count else ""
            self.controls.info.setText(f"{count:,} of {len(self.map):,} tiles selected{of}.")
        self._refresh_gallery()
        return count

    def pick(self, code: int) -> int:
        """Select the tiles of a category of the current colouring (a legend row)."""
        if self.colouring is None or not self.colouring.categorical:
            return 0
        entry = next((e for e in self.colouring.entries if e.code == code), None)
        name = entry.name if entry is not None else ""
        return self.select(self.colouring.members(code), source="legend", name=name)

    def label_category(self, code: int) -> int:
        """Label the tiles of a category (a cluster) with the active class; how many."""
        if not self.pick(code):
            return 0
        return self.label_selection()

    def _grid_cells(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid ``(rows, cols)`` of the masked tiles of the open slide, and their indices."""
        tiles = np.flatnonzero(np.asarray(mask, dtype=bool) & self.map.on_open_slide)
        positions = self._positions[tiles]
        inside = (positions >= 0).all(axis=1) & (positions < self.grid_shape).all(axis=1)
        return positions[inside, 0], positions[inside, 1], tiles[inside]

    def _clear_lasso(self) -> None:
        if self.is_open and LASSO_NAME in self.viewer.layers:
            lasso = self.viewer.layers[LASSO_NAME]
            if len(lasso.data):
                lasso.data = []

    def _keep_last_lasso(self) -> None:
        """Only the lasso that made the selection stays drawn."""
        if not self.is_open or LASSO_NAME not in self.viewer.layers:
            return
        lasso = self.viewer.layers[LASSO_NAME]
        if len(lasso.data) > 1:
            lasso.selected_data = set(range(len(lasso.data) - 1))
            lasso.remove_selected()

    def _on_lasso(self, event) -> None:
        if getattr(event, "action", "added") != "added" or not len(event.source.data):
            return
        from qtpy.QtCore import QTimer

        self.select(self.map.in_polygon(event.source.data[-1][:, -2:]), source="lasso")
        QTimer.singleShot(0, self._keep_last_lasso)  # not while the layer is emitting

    def _on_slide_lasso(self, event) -> None:
        if self.map is None or getattr(event, "action", "added") != "added" or \
                not len(event.source.data):
            return
        inside = self.map.tiles_in_polygon(event.source.data[-1][:, -2:][:, ::-1])
        self.select(inside & self.map.on_open_slide, source="slide")

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

    def _on_active_class(self, name) -> None:
        if self.is_open and self.controls is not None:
            self.controls.set_active_class(name)

    # -- gallery -------------------------------------------------------------------------
    def _refresh_gallery(self) -> None:
        """Read example patches of the selection in the background, then show them."""
        if self.shown_mode is None:
            return
        gallery = self.controls.gallery
        self._gallery_request += 1
        count = int(self.selected.sum())
        if not count:
            gallery.show_text("Select tiles (a lasso, a region on the slide or a legend "
                              "row) to see examples.")
            return
        read = self._patch_reader()
        if read is None:
            gallery.show_text("No slide to read the patches from.")
            return
        indices = example_tiles(self.selected, GALLERY_SIZE, seed=0)
        request, what = self._gallery_request, self.selection_name
        caption = (f"{len(indices)} of the {count:,} tiles of {what}" if count > len(indices)
                   else f"the {count:,} tiles of {what}")
        gallery.show_text(f"Reading {len(indices)} patches of {what}...")

        def shown(thumbs) -> None:
            if request == self._gallery_request and self.shown_mode is not None:
                self.controls.gallery.show_examples(indices, thumbs, caption)

        self.tasks.run(("gallery", request),
                       lambda: [None if p is None else thumbnail(p) for p in map(read, indices)],
                       shown)

    # -- pointer -------------------------------------------------------------------------
    def point_at(self, position) -> int | None:
        """The tile under an explorer world position ``(row, col)``, or None."""
        return None if self.map is None else self.map.nearest(position[-2:])

    def centre_slide_on(self, index: int, select: bool = True) -> None:
        """Centre the slide's view on tile ``index`` (and select it alone if ``select``)."""
        mask = np.zeros(len(self.map), dtype=bool)
        mask[index] = True
        if not self.map.on_open_slide[index]:
            if select:
                self.select(mask, source="click")
            self.session.tell("info", f"this tile is on "
                              f"{self.map.slides[self.map.slide_ids[index]]}: open that slide "
                              "to see it in place.")
            return
        x, y = self.map.centres[index]
        reference = self._slide_layer_of()
        world = np.array([y, x]) if reference is None else \
            np.array([y, x]) * np.asarray(reference.scale[-2:]) + reference.translate[-2:]
        viewer_camera(self.slide_viewer).center = tuple(world.tolist())
        if select:
            self.select(mask, source="click")

    def patch(self, index: int) -> np.ndarray | None:
        """The tile's first patch (RGB) as the backbone saw it, or None without a slide."""
        read = self._patch_reader()
        return None if read is None else read(index)

    def _patch_reader(self) -> Callable[[int], np.ndarray | None] | None:
        """A function reading a tile's first patch (safe in a thread); None without a slide.

        Tiles of other slides of the cohort view are read from their slide file.
        """
        try:
            slide = self.session.working_slide()
        except DFLError:  # no slide or mpp: nothing to show
            return None
        comp = self.session.settings.composition
        size, mpp = (comp.patch_size, comp.patch_size), comp.zooms[0]
        anchors, slide_ids = self.map.anchors, self.map.slide_ids

        def read(index: int) -> np.ndarray | None:
            slide_id = int(slide_ids[index])
            source = slide if not slide_id else self._other_slide(slide_id)
            if source is None:
                return None
            x, y = anchors[index]
            return source.read_region((float(x), float(y)), size, mpp=mpp)

        return read

    def _other_slide(self, slide_id: int):
        """Another slide of the cohort view, opened lazily (None when it cannot be read)."""
        with self._slides_lock:
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
        if index is not None and self.shown_mode is not None:
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
        """Show the tiles' false colours (first three principal components) over the slide.

        Returns the layer, or None while the colours are being computed (the layer appears
        when they are) or without embeddings.
        """
        if self.embeddings is None:
            return None
        embeddings = self.embeddings  # over every slide shown: comparable colours
        rgb = self._derive("pca colours", lambda: pca_colors(embeddings),
                           lambda _rgb: self.false_colour_layer())
        if rgb is None:
            return None
        rows, cols, tiles = self._grid_cells(np.ones(len(self.map), dtype=bool))
        return self.slide_layers.show_false_colours(rows, cols, rgb[tiles])

