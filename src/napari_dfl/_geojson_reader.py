"""napari reader: QuPath GeoJSON annotations as a Shapes layer and a Points layer.

Dropping a ``.geojson`` file on the viewer gives a Shapes layer of its regions (QuPath's
annotations and tiles) and a Points layer of its points (point annotations, and QuPath's
cells and detections at their centroid; see :mod:`napari_dfl.core.annotations.geojson`),
each item with its class and id in ``features["class"]`` / ``features["id"]`` and coloured
by its QuPath class colour. The layers' metadata (plain values) hold ``reader``
(``"napari-dfl"``), ``geojson`` (the file), ``colors`` (``{class: "#rrggbb"}``) and
``properties`` (``{id: properties}``: object types, outlines, measurements). With the
napari-dfl panel open, the panel takes them into its own annotation layers at once;
without it they stay as they are, and File > Save writes them back as GeoJSON
(:mod:`napari_dfl._writer`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_dfl._reader import READER_TAG
from napari_dfl.core.annotations.annotation import AnnotationError, read_geojson
from napari_dfl.core.annotations.layer_data import layer_rows
from napari_dfl.core.util.palette import class_colors

__all__ = ["EXTENSIONS", "napari_get_reader", "read_geojson_layers"]

EXTENSIONS = (".geojson",)


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """Return :func:`read_geojson_layers` for one ``.geojson`` file, else None.

    Decided by the name: nothing is read until napari calls the reader.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).lower().endswith(EXTENSIONS) or not os.path.isfile(path):
        return None
    return read_geojson_layers


def read_geojson_layers(path: str | list[str]) -> list[tuple]:
    """Read a QuPath GeoJSON file as napari layer data (see the module docstring).

    Raises:
        AnnotationError: the file is not valid GeoJSON or holds unclassified or broken
            features; the message names the feature and what to do.

    """
    from napari_dfl.core.project.folder import geojson_colors  # with the reader's work

    if isinstance(path, list):
        path = path[0]
    annotations = read_geojson(path)
    if not annotations:
        raise AnnotationError(f"{Path(path).name} holds no object with an area or a point; "
                              "export classified objects from QuPath (File > Export objects "
                              "as GeoJSON).")
    labels = list(dict.fromkeys(a.label for a in annotations))
    colors = class_colors(labels, geojson_colors(path))
    rows = layer_rows(annotations)
    stem = Path(path).name.rsplit(".", 1)[0]

    def metadata(ids: list[str]) -> dict:
        mine = set(ids) | {i.rsplit("#", 1)[0] for i in ids}
        return {"reader": READER_TAG, "geojson": str(path), "colors": dict(colors),
                "properties": {i: p for i, p in rows.properties.items() if i in mine}}

    layers: list[tuple] = []
    if rows.polygons:
        faces = [colors[label] for label in rows.polygon_labels]
        layers.append((rows.polygons, {
            "name": f"{stem} regions", "shape_type": "polygon", "opacity": 0.4,
            "edge_width": 4, "face_color": faces, "edge_color": faces,
            "features": {"class": rows.polygon_labels, "id": rows.polygon_ids},
            "metadata": metadata(rows.polygon_ids)}, "shapes"))
    if rows.points:
        layers.append((np.asarray(rows.points, dtype=np.float64), {
            "name": f"{stem} points", "size": 40, "border_width": 0.1,
            "face_color": [colors[label] for label in rows.point_labels],
            "features": {"class": rows.point_labels, "id": rows.point_ids},
            "metadata": metadata(rows.point_ids)}, "points"))
    return layers
