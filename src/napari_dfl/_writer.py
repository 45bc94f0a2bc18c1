"""napari writer: Shapes and Points layers as QuPath GeoJSON (File > Save Selected Layers).

napari's own writers save a Points layer as CSV and Shapes as CSV too, dropping the class
of each item. This writer turns the selected Shapes and Points layers into one QuPath
FeatureCollection (:func:`napari_dfl.core.annotations.geojson.feature_collection`): each
shape a region (ellipses as 64-gons; lines and paths have no area and are left out), each
point a point, with its class (``features["class"]``; an item without one takes the layer's
name) and its id (``features["id"]``; a new UUID when it has none). The classes' colours
come from the layer's ``metadata["colors"]`` (set by the GeoJSON reader), else from the
items' face colours, so the panel's class colours reach QuPath. Properties kept in
``metadata["properties"]`` (QuPath's object types and outlines, measurements) are written
too, so a cell read from QuPath goes back as a cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_dfl.core.annotations.annotation import AnnotationError, write_geojson
from napari_dfl.core.annotations.layer_data import annotations_from_rows
from napari_dfl.core.util.palette import ColorError, to_hex

__all__ = ["write_geojson_layers"]


def _column(features: Any, name: str, count: int) -> list[str]:
    """A text column of a layer's features (``""`` where missing)."""
    if features is None or name not in features:
        return [""] * count
    values = list(features[name])
    return ["" if v is None or v != v else str(v) for v in values]  # v != v: NaN


def _face_colors(labels: list[str], faces: Any) -> dict[str, str]:
    """``{class: "#rrggbb"}`` from the first item of each class's face colour (RGBA 0-1)."""
    out: dict[str, str] = {}
    faces = np.asarray(faces if faces is not None else [], dtype=np.float64)
    if faces.ndim != 2 or len(faces) != len(labels):
        return out
    for label, rgba in zip(labels, faces, strict=True):
        if label and label not in out:
            try:
                out[label] = to_hex([round(255 * float(c)) for c in rgba[:3]])
            except ColorError:
                continue
    return out


def write_geojson_layers(path: str, layer_data: Sequence[tuple]) -> list[str]:
    """Write Shapes and Points layers as one QuPath GeoJSON file.

    Args:
        path: the destination (``.geojson`` is added when it lacks it).
        layer_data: napari's ``(data, attributes, layer_type)`` of each layer.

    Returns:
        ``[path]`` written.

    Raises:
        AnnotationError: nothing to write (only lines, or empty layers).

    """
    if not str(path).lower().endswith(".geojson"):
        path = f"{path}.geojson"
    shape_types: list[str] = []
    shapes: list[np.ndarray] = []
    shape_labels: list[str] = []
    shape_ids: list[str] = []
    points: list[np.ndarray] = []
    point_labels: list[str] = []
    point_ids: list[str] = []
    colors: dict[str, str] = {}
    properties: dict[str, dict] = {}
    for data, attributes, layer_type in layer_data:
        meta = attributes.get("metadata") or {}
        features = attributes.get("features")
        count = len(data)
        labels = [label or str(attributes.get("name") or "annotation")
                  for label in _column(features, "class", count)]
        ids = _column(features, "id", count)
        if layer_type == "shapes":
            shape_types += list(attributes.get("shape_type") or ["polygon"] * count)
            shapes += [np.asarray(d) for d in data]
            shape_labels += labels
            shape_ids += ids
        elif layer_type == "points":
            points.append(np.asarray(data, dtype=np.float64).reshape(count, -1)[:, -2:])
            point_labels += labels
            point_ids += ids
        else:
            continue
        for label, color in _face_colors(labels, attributes.get("face_color")).items():
            colors.setdefault(label, color)
        colors.update({k: v for k, v in (meta.get("colors") or {}).items()
                       if isinstance(k, str) and isinstance(v, str)})
        properties.update({k: v for k, v in (meta.get("properties") or {}).items()
                           if isinstance(v, dict)})
    marks = np.concatenate(points) if points else np.zeros((0, 2))
    annotations = annotations_from_rows(shape_types, shapes, shape_labels, shape_ids, marks,
                                        point_labels, point_ids, properties)
    if not annotations:
        raise AnnotationError(f"nothing to write to {path}: the layers hold no shape with an "
                              "area and no point. Draw regions or points first.")
    used = {a.label for a in annotations}
    write_geojson(annotations, path, colors={k: v for k, v in colors.items() if k in used})
    return [str(path)]
