"""Annotations as the plain arrays of napari's Shapes and Points layers, and back.

napari holds a layer's vertices in (row, col) order; the core's annotations are shapely
geometries in (x, y). This module is the one place that converts, without napari: the
panel's layers (``_qt/annotation_layers.py``), the GeoJSON reader and the writer napari
calls for File > Save all use it. A class and an id travel beside each shape or point (the
layers' ``features["class"]`` and ``features["id"]``); the annotations' other properties
(QuPath's object type and outlines, measurements) travel in a ``{id: properties}`` mapping,
JSON-ready, that a layer keeps in its ``metadata["properties"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from shapely.geometry import Point, Polygon

from napari_dfl.core.annotations.annotation import POINT, REGION, Annotation

__all__ = ["ELLIPSE_VERTICES", "LayerRows", "annotations_from_rows", "layer_rows",
           "polygon_from_vertices", "properties_of"]

#: Vertices of the polygon an ellipse becomes.
ELLIPSE_VERTICES = 64


def polygon_from_vertices(shape_type: str, vertices: np.ndarray) -> Polygon | None:
    """A napari shape (``(N, 2+)`` vertices, (row, col) last) as a polygon in (x, y).

    Ellipses (napari's four bounding corners) become :data:`ELLIPSE_VERTICES`-gons; lines,
    paths and shapes of fewer than three vertices give None, and so does a shape left
    without area once made valid.
    """
    xy = np.asarray(vertices, dtype=np.float64)[:, -2:][:, ::-1]
    if shape_type == "ellipse":
        centre = xy.mean(axis=0)
        rx = np.abs(xy[:, 0] - centre[0]).max()
        ry = np.abs(xy[:, 1] - centre[1]).max()
        t = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)
        xy = np.stack([centre[0] + rx * np.cos(t), centre[1] + ry * np.sin(t)], axis=1)
    if shape_type in ("line", "path") or len(xy) < 3:
        return None
    polygon = Polygon(xy)
    if not polygon.is_valid:
        polygon = polygon.buffer(0)
    return None if polygon.is_empty or polygon.geom_type != "Polygon" else polygon


class LayerRows:
    """What annotations put in a Shapes and a Points layer (see :func:`layer_rows`).

    Attributes:
        polygons: ``(N, 2)`` (row, col) exterior vertices of each region part.
        polygon_labels: class of each polygon.
        polygon_ids: id of each polygon (``"<id>#k"`` for the k-th part of a multipolygon).
        points: ``(M, 2)`` (row, col) of every point.
        point_labels: class of each point.
        point_ids: id of each point (``"<id>#k"`` inside a multipoint).
        properties: ``{id: properties}`` of the annotations that have any.

    """

    def __init__(self) -> None:
        self.polygons: list[np.ndarray] = []
        self.polygon_labels: list[str] = []
        self.polygon_ids: list[str] = []
        self.points: list[tuple[float, float]] = []
        self.point_labels: list[str] = []
        self.point_ids: list[str] = []
        self.properties: dict[str, dict] = {}


def layer_rows(annotations: Iterable[Annotation]) -> LayerRows:
    """Split annotations into the rows of a Shapes layer and of a Points layer.

    A multipolygon gives one polygon per part and a multipoint one point per point; a part's
    id is ``"<id>#k"`` (k from 1) when there are several.
    """
    rows = LayerRows()
    for ann in annotations:
        if ann.properties:
            rows.properties[ann.id] = dict(ann.properties)
        if ann.kind == REGION:
            parts = list(getattr(ann.geometry, "geoms", [ann.geometry]))
            for k, geom in enumerate(parts):
                rows.polygons.append(np.asarray(geom.exterior.coords)[:-1, ::-1])
                rows.polygon_labels.append(ann.label)
                rows.polygon_ids.append(ann.id if len(parts) == 1 else f"{ann.id}#{k + 1}")
        elif ann.kind == POINT:
            points = ann.points()
            for k, (x, y) in enumerate(points):
                rows.points.append((float(y), float(x)))
                rows.point_labels.append(ann.label)
                rows.point_ids.append(ann.id if len(points) == 1 else f"{ann.id}#{k + 1}")
    return rows


def properties_of(ident: str, properties: Mapping[str, dict] | None) -> dict:
    """The properties kept for ``ident`` (or for the annotation ``"<id>#k"`` was part of)."""
    if not properties:
        return {}
    found = properties.get(ident)
    if found is None and "#" in ident:
        found = properties.get(ident.rsplit("#", 1)[0])
    return dict(found) if isinstance(found, dict) else {}


def annotations_from_rows(shape_types: Sequence[str], shapes: Sequence[np.ndarray],
                          shape_labels: Sequence[str], shape_ids: Sequence[str],
                          points: np.ndarray, point_labels: Sequence[str],
                          point_ids: Sequence[str],
                          properties: Mapping[str, dict] | None = None) -> list[Annotation]:
    """A Shapes layer's and a Points layer's items as annotations (regions first).

    Items without a class (an empty label) and shapes without area (lines, paths) are left
    out. An empty id gets a new one (:class:`Annotation` draws a UUID).

    Args:
        shape_types: napari's ``shape_type`` of each shape.
        shapes: each shape's vertices, (row, col) last.
        shape_labels: class of each shape.
        shape_ids: id of each shape.
        points: ``(M, 2+)`` points, (row, col) last.
        point_labels: class of each point.
        point_ids: id of each point.
        properties: ``{id: properties}`` given back to the annotations with those ids.

    """
    out: list[Annotation] = []
    for shape_type, data, label, ident in zip(shape_types, shapes, shape_labels, shape_ids,
                                              strict=True):
        polygon = polygon_from_vertices(shape_type, np.asarray(data) * 1.0)
        if label and polygon is not None:
            out.append(Annotation(polygon, label, id=ident,
                                  properties=properties_of(ident, properties)))
    points = np.asarray(points, dtype=np.float64).reshape(-1, np.shape(points)[-1]
                                                         if np.ndim(points) == 2 else 2)
    for (row, col), label, ident in zip(points[:, -2:], point_labels, point_ids, strict=True):
        if label:
            out.append(Annotation(Point(float(col), float(row)), label, id=ident,
                                  properties=properties_of(ident, properties)))
    return out
