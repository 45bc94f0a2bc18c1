"""The annotation layers: regions (Shapes) and points (Points) kept in step with the session.

Each shape or point has a class (``layer.features["class"]``) and a stable id
(``layer.features["id"]``): new items take the active class through
``layer.feature_defaults`` and get an id the moment they appear; ids travel with the
annotations into the autosave, projects and GeoJSON files, so the same annotations always
give the same samples and validation groups. After every edit the layers' content is sent
to the session (:meth:`Session.set_annotations`); annotations the session adds (a GeoJSON,
a labelled suggestion) are drawn here. Layer data are level-0 pixels in napari's (row,
col) order; the core's annotations are shapely geometries in (x, y), converted by
:mod:`napari_dfl.core.annotations.layer_data`. The annotations' other properties (QuPath's
object type and outlines, measurements) are kept in each layer's
``metadata["properties"]`` (``{id: properties}``, plain values), so that they survive edits
and File > Save writes them (:mod:`napari_dfl._writer`).
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.annotations.layer_data import annotations_from_rows, layer_rows
from napari_dfl.core.util.palette import UNKNOWN

__all__ = ["CLASS", "ID", "POINTS_NAME", "PROPERTIES", "REGIONS_NAME", "AnnotationLayers",
           "annotations_from_layers", "is_dropped_geojson", "labels_of", "rgba",
           "take_geojson_layers"]

REGIONS_NAME = "DFL regions"
POINTS_NAME = "DFL points"
CLASS, ID = "class", "id"
#: The key of ``layer.metadata`` that keeps ``{id: properties}`` of the layer's items.
PROPERTIES = "properties"


def rgba(color) -> np.ndarray:
    """A colour (name, hex or 0-255 / 0-1 sequence) as an RGBA float array in [0, 1]."""
    from napari.utils.colormaps.standardize_color import transform_color

    if isinstance(color, (list, tuple, np.ndarray)) and max(color) > 1:
        color = [c / 255.0 for c in color]
    return transform_color(color)[0]


def _placement(reference) -> dict:
    if reference is None:
        return {}
    return {"scale": tuple(reference.scale[-2:]), "translate": tuple(reference.translate[-2:])}


def _empty_features() -> dict:
    return {CLASS: np.array([], dtype=object), ID: np.array([], dtype=object)}


def make_regions_layer(reference=None):
    """A new Shapes layer for class regions, placed like ``reference`` (the slide layer)."""
    from napari.layers import Shapes

    return Shapes(name=REGIONS_NAME, ndim=2, features=_empty_features(), opacity=0.4,
                  edge_width=4, **_placement(reference))


def make_points_layer(reference=None):
    """A new Points layer for point marks, placed like ``reference`` (the slide layer)."""
    from napari.layers import Points

    return Points(name=POINTS_NAME, ndim=2, features=_empty_features(), size=40,
                  border_width=0.1, **_placement(reference))


def _column(layer, name: str) -> np.ndarray:
    if layer is None or name not in layer.features:
        return np.full(0 if layer is None else len(layer.data), "", dtype=object)
    values = layer.features[name].to_numpy(dtype=object)
    return np.array(["" if v is None or v != v else str(v) for v in values], dtype=object)


def labels_of(layer) -> np.ndarray:
    """``(N,)`` class name of every item of a layer (empty text where there is none)."""
    return _column(layer, CLASS)


def _is_shapes(layer) -> bool:
    return hasattr(layer, "add_rectangles")


def _properties(layer) -> dict:
    return {} if layer is None else dict(layer.metadata.get(PROPERTIES) or {})


def annotations_from_layers(regions, points) -> list[Annotation]:
    """Regions and points of the layers as core annotations (unlabelled items skipped)."""
    shape_types = [] if regions is None else list(regions.shape_type)
    shapes = [] if regions is None else list(regions.data)
    marks = np.zeros((0, 2)) if points is None else np.asarray(points.data)
    return annotations_from_rows(shape_types, shapes, labels_of(regions), _column(regions, ID),
                                 marks, labels_of(points), _column(points, ID),
                                 {**_properties(regions), **_properties(points)})


def is_dropped_geojson(layer) -> bool:
    """Whether ``layer`` is a Shapes or Points layer of napari-dfl's GeoJSON reader."""
    from napari_dfl._reader import READER_TAG

    metadata = getattr(layer, "metadata", None) or {}
    return (metadata.get("reader") == READER_TAG and "geojson" in metadata
            and type(layer).__name__ in ("Shapes", "Points"))


def take_geojson_layers(viewer, session) -> int:
    """Move the layers of dropped GeoJSON files into the session (hence the panel's layers).

    Their classes are added to the session with the file's colours (a class it has takes
    the file's colour), their items become the session's annotations with their ids and
    properties, and the dropped layers leave the viewer. Returns the annotations taken.
    """
    taken = 0
    for layer in [lay for lay in viewer.layers if is_dropped_geojson(lay)]:
        shapes = _is_shapes(layer)
        annotations = annotations_from_layers(layer if shapes else None,
                                              None if shapes else layer)
        used = {a.label for a in annotations}
        for name, color in (layer.metadata.get("colors") or {}).items():
            if name not in used:
                continue
            if name in session.colors:
                session.set_color(name, color)
            else:
                session.add_class(name, color)
        session.add_annotations(annotations)
        viewer.layers.remove(layer)
        taken += len(annotations)
        session.tell("info", f"{len(annotations)} annotations of {layer.name} are now in the "
                     f"panel's layers ({REGIONS_NAME}, {POINTS_NAME}).")
    return taken


class AnnotationLayers:
    """The session's regions and points layers in one viewer (see the module docstring)."""

    def __init__(self, viewer, session, reference=None) -> None:
        self.viewer, self.session = viewer, session
        layers = viewer.layers
        self.regions = layers[REGIONS_NAME] if REGIONS_NAME in layers else \
            viewer.add_layer(make_regions_layer(reference))
        self.points = layers[POINTS_NAME] if POINTS_NAME in layers else \
            viewer.add_layer(make_points_layer(reference))
        self._quiet = False
        for layer in (self.regions, self.points):
            layer.events.data.connect(self._on_edit)
            layer.events.features.connect(self._on_edit)
        session.annotations_added.connect(self._on_added)
        session.annotations_replaced.connect(self._on_replaced)
        session.class_renamed.connect(self._on_renamed)
        session.class_removed.connect(self._on_removed)
        session.classes_changed.connect(self.recolor)
        session.active_class_changed.connect(self._on_active)
        self._on_active(session.active)

    def disconnect(self) -> None:
        """Stop following the session (the layers stay in the viewer)."""
        for signal, slot in ((self.session.annotations_added, self._on_added),
                             (self.session.annotations_replaced, self._on_replaced),
                             (self.session.class_renamed, self._on_renamed),
                             (self.session.class_removed, self._on_removed),
                             (self.session.classes_changed, self.recolor),
                             (self.session.active_class_changed, self._on_active)):
            signal.disconnect(slot)
        for layer in (self.regions, self.points):
            layer.events.data.disconnect(self._on_edit)
            layer.events.features.disconnect(self._on_edit)

    @property
    def layers(self) -> tuple:
        """``(regions, points)``."""
        return self.regions, self.points

    def alive(self) -> bool:
        """Whether both layers are still in the viewer."""
        return self.regions in self.viewer.layers and self.points in self.viewer.layers

    # -- layers -> session -------------------------------------------------------------------
    def _on_edit(self, *_args) -> None:
        if self._quiet:
            return
        self._give_ids()
        self.recolor()
        self.session.set_annotations(annotations_from_layers(self.regions, self.points))
        unlabelled = sum(int((labels_of(layer) == "").sum()) for layer in self.layers)
        if unlabelled:
            self.session.tell("warning", f"{unlabelled} drawn item(s) have no class and are "
                              "not kept: add a class in the panel first (keys 1-9 pick it), "
                              "then draw again.")

    def _give_ids(self) -> None:
        """New items (drawn by the user) get an id of their own, once.

        napari gives a new item the layer's feature defaults, which can hold the id of the
        item added before it: a repeated id counts as missing (the first keeps it).
        """
        for layer in self.layers:
            ids = _column(layer, ID)
            missing = ids == ""
            _, first = np.unique(ids, return_index=True)
            repeated = np.ones(len(ids), dtype=bool)
            repeated[first] = False
            missing |= repeated
            if not missing.any():
                continue
            ids[missing] = [str(uuid.uuid4()) for _ in range(int(missing.sum()))]
            self._set_column(layer, ID, ids)

    def _set_column(self, layer, name: str, values: np.ndarray) -> None:
        features = layer.features.copy()
        features[name] = np.asarray(values, dtype=object)
        with self._silenced():
            layer.features = features

    @contextlib.contextmanager
    def _silenced(self) -> Iterator[None]:
        """Edits made here are not echoed back to the session one by one."""
        previous, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = previous

    # -- session -> layers -------------------------------------------------------------------
    def _on_added(self, annotations: Iterable[Annotation]) -> None:
        rows = layer_rows(annotations)
        with self._silenced():
            if rows.polygons:
                self._append(self.regions, list(zip(rows.polygon_labels, rows.polygon_ids,
                                                    strict=True)),
                             lambda: self.regions.add_polygons(rows.polygons))
                self._keep(self.regions, rows.properties, rows.polygon_ids)
            if rows.points:
                self._append(self.points, list(zip(rows.point_labels, rows.point_ids,
                                                   strict=True)),
                             lambda: self.points.add(np.asarray(rows.points)))
                self._keep(self.points, rows.properties, rows.point_ids)
        self._on_edit()

    @staticmethod
    def _keep(layer, properties: dict[str, dict], ids: list[str]) -> None:
        """Keep the properties of the annotations drawn on ``layer`` in its metadata."""
        mine = {i.rsplit("#", 1)[0] if i not in properties else i for i in ids}
        kept = {i: p for i, p in properties.items() if i in mine}
        if kept:
            layer.metadata[PROPERTIES] = {**_properties(layer), **kept}

    def _on_replaced(self, annotations: Iterable[Annotation]) -> None:
        with self._silenced():
            self._clear_layers()
        self._on_added(annotations)

    def _append(self, layer, rows: list[tuple[str, str]], add) -> None:
        before = len(layer.data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            add()
        labels, ids = _column(layer, CLASS), _column(layer, ID)
        labels[before:] = [label for label, _ in rows]
        ids[before:] = [ident for _, ident in rows]
        features = layer.features.copy()
        features[CLASS], features[ID] = labels, ids
        layer.features = features

    def _on_renamed(self, old: str, new: str) -> None:
        for layer in self.layers:
            labels = labels_of(layer)
            if (labels == old).any():
                labels[labels == old] = new
                self._set_column(layer, CLASS, labels)
        self._on_active(self.session.active)
        self._on_edit()

    def _on_removed(self, name: str) -> None:
        with self._silenced():
            for layer in self.layers:
                doomed = set(np.flatnonzero(labels_of(layer) == name).tolist())
                if not doomed:
                    continue
                if _is_shapes(layer):
                    layer.selected_data = doomed
                    layer.remove_selected()
                else:
                    layer.data = np.delete(np.asarray(layer.data), sorted(doomed), axis=0)
        self._on_edit()

    def _on_active(self, name: str | None) -> None:
        if not name:
            return
        color = rgba(self.session.colors.get(name, UNKNOWN))
        for layer in self.layers:
            layer.feature_defaults = {CLASS: name, ID: ""}
            layer.selected_data = set()  # napari would recolour the selected items too
            layer.current_face_color = color
            if hasattr(layer, "current_edge_color"):
                layer.current_edge_color = color

    def recolor(self, *_args) -> None:
        """Colour each item by its class (grey for a class the session does not know)."""
        colors: Mapping[str, str] = self.session.colors
        with self._silenced():
            for layer in self.layers:
                labels = labels_of(layer)
                if not len(labels):
                    continue
                table = np.array([rgba(colors.get(n, UNKNOWN)) for n in labels])
                layer.face_color = table
                if _is_shapes(layer):
                    layer.edge_color = table

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{class: (regions, points)}`` for every class of the session."""
        region_labels, point_labels = labels_of(self.regions), labels_of(self.points)
        return {c: (int((region_labels == c).sum()), int((point_labels == c).sum()))
                for c in self.session.classes}

    def _clear_layers(self) -> None:
        for layer in self.layers:
            layer.metadata.pop(PROPERTIES, None)
        if len(self.regions.data):
            self.regions.selected_data = set(range(len(self.regions.data)))
            self.regions.remove_selected()
        if len(self.points.data):
            self.points.data = self.points.data[:0]
