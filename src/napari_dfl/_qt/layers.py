"""Annotation layers: a Shapes layer of regions and a Points layer of point marks.

The class of each shape or point is the ``"class"`` column of ``layer.features``; new items
take the active class through ``layer.feature_defaults``, and colours follow the classes.
Layer data are level-0 pixels in napari's (row, col) order; the core's annotations are
shapely geometries in (x, y): this module is the one place that converts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
from shapely.geometry import Point, Polygon

from napari_dfl.core.annotations.annotation import POINT, REGION, Annotation

REGIONS_NAME = "DFL regions"
POINTS_NAME = "DFL points"
CLASS = "class"
_ELLIPSE_VERTICES = 64


def _placement(reference) -> dict:
    if reference is None:
        return {}
    return {"scale": tuple(reference.scale[-2:]), "translate": tuple(reference.translate[-2:])}


def make_regions_layer(reference=None):
    """A new Shapes layer for class regions, placed like ``reference`` (the slide layer)."""
    from napari.layers import Shapes

    return Shapes(name=REGIONS_NAME, ndim=2, features={CLASS: np.array([], dtype=object)},
                  opacity=0.4, edge_width=4, **_placement(reference))


def make_points_layer(reference=None):
    """A new Points layer for point marks, placed like ``reference`` (the slide layer)."""
    from napari.layers import Points

    return Points(name=POINTS_NAME, ndim=2, features={CLASS: np.array([], dtype=object)},
                  size=40, border_width=0.1, **_placement(reference))


def labels_of(layer) -> np.ndarray:
    """``(N,)`` class name of every item of a layer (empty text where there is none)."""
    if layer is None or CLASS not in layer.features:
        return np.array([], dtype=object)
    values = layer.features[CLASS].to_numpy(dtype=object)
    return np.array(["" if v is None or v != v else str(v) for v in values], dtype=object)


def rgba(color) -> np.ndarray:
    """A colour (name, hex or 0-255 / 0-1 sequence) as an RGBA float array in [0, 1]."""
    from napari.utils.colormaps.standardize_color import transform_color

    if isinstance(color, (list, tuple, np.ndarray)) and max(color) > 1:
        color = [c / 255.0 for c in color]
    return transform_color(color)[0]


def recolor(layer, colors: Mapping[str, object]) -> None:
    """Colour each item of ``layer`` by its class (grey for unknown classes)."""
    labels = labels_of(layer)
    if not len(labels):
        return
    grey = np.array([0.6, 0.6, 0.6, 1.0])
    table = np.array([rgba(colors[n]) if n in colors else grey for n in labels])
    if hasattr(layer, "edge_color") and hasattr(layer, "add_rectangles"):
        layer.face_color = table
        layer.edge_color = table
    else:
        layer.face_color = table


def set_active(layer, name: str, color) -> None:
    """New items of ``layer`` get class ``name`` and its colour."""
    layer.feature_defaults = {CLASS: name}
    layer.selected_data = set()  # napari would recolour the selected items too
    layer.current_face_color = rgba(color)
    if hasattr(layer, "current_edge_color"):
        layer.current_edge_color = rgba(color)


def rename_class(layer, old: str, new: str) -> None:
    """Rename a class in a layer's features (firing the features event)."""
    if layer is None or not len(layer.features):
        return
    features = layer.features.copy()
    column = features[CLASS].astype(object)
    features[CLASS] = column.where(column != old, new)
    layer.features = features


def remove_class(layer, name: str) -> None:
    """Delete every item of class ``name`` from a layer."""
    labels = labels_of(layer)
    doomed = set(np.flatnonzero(labels == name).tolist())
    if not doomed:
        return
    if hasattr(layer, "remove_selected") and hasattr(layer, "add_rectangles"):
        layer.selected_data = doomed
        layer.remove_selected()
    else:
        layer.data = np.delete(np.asarray(layer.data), sorted(doomed), axis=0)


def _ring(shape_type: str, vertices: np.ndarray) -> Polygon | None:
    xy = np.asarray(vertices, dtype=np.float64)[:, -2:][:, ::-1]
    if shape_type == "ellipse":
        centre = xy.mean(axis=0)
        rx = np.abs(xy[:, 0] - centre[0]).max()
        ry = np.abs(xy[:, 1] - centre[1]).max()
        t = np.linspace(0, 2 * np.pi, _ELLIPSE_VERTICES, endpoint=False)
        xy = np.stack([centre[0] + rx * np.cos(t), centre[1] + ry * np.sin(t)], axis=1)
    if shape_type in ("line", "path") or len(xy) < 3:
        return None
    polygon = Polygon(xy)
    if not polygon.is_valid:
        polygon = polygon.buffer(0)
    return None if polygon.is_empty or polygon.geom_type != "Polygon" else polygon


def annotations_from_layers(regions, points) -> list[Annotation]:
    """Regions and points of the layers as core annotations (unlabelled items skipped)."""
    out: list[Annotation] = []
    if regions is not None:
        for shape_type, data, label in zip(regions.shape_type, regions.data,
                                           labels_of(regions), strict=True):
            polygon = _ring(shape_type, np.asarray(data) * 1.0)
            if label and polygon is not None:
                out.append(Annotation(polygon, label))
    if points is not None:
        for (row, col), label in zip(np.asarray(points.data)[:, -2:], labels_of(points),
                                     strict=True):
            if label:
                out.append(Annotation(Point(float(col), float(row)), label))
    return out


def add_annotations(regions, points, annotations: Iterable[Annotation]) -> None:
    """Add core annotations to the layers (polygons of multipolygons one by one)."""
    polygons, polygon_labels, marks, mark_labels = [], [], [], []
    for ann in annotations:
        if ann.kind == REGION:
            geoms = getattr(ann.geometry, "geoms", [ann.geometry])
            for geom in geoms:
                polygons.append(np.asarray(geom.exterior.coords)[:-1, ::-1])
                polygon_labels.append(ann.label)
        elif ann.kind == POINT:
            for x, y in ann.points():
                marks.append((y, x))
                mark_labels.append(ann.label)
    if polygons:
        _append(regions, polygon_labels, lambda: regions.add_polygons(polygons))
    if marks:
        _append(points, mark_labels, lambda: points.add(np.asarray(marks)))


def _append(layer, labels: list[str], add) -> None:
    before = len(layer.features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        add()
    features = layer.features.copy()
    column = np.array(features[CLASS].to_numpy(dtype=object), dtype=object)
    column[before:] = labels
    features[CLASS] = column
    layer.features = features


def class_counts(regions, points, classes: Iterable[str]) -> dict[str, tuple[int, int]]:
    """``{class: (regions, points)}`` for every class given."""
    region_labels, point_labels = labels_of(regions), labels_of(points)
    return {c: (int((region_labels == c).sum()), int((point_labels == c).sum()))
            for c in classes}
